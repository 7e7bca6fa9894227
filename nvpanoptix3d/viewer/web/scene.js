// The scene page: a panoptic voxel scene drawn with three.js, coloured by class or by object, with the objects
// list, their boxes and the camera frusta. A written page inlines its data (JSON, arrays in base64) and this
// script, so it opens from the file system and from a static bucket with nothing fetched. A live page
// (`nvpanoptix3d view`) polls the scene a running job writes and redraws it, keeping the view.
import * as THREE from "three";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";

function decode(b64, Type) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Type(bytes.buffer);
}

function objectColour(id) {
  // golden-ratio hues: neighbouring ids get distant colours
  return new THREE.Color().setHSL((id * 0.618034) % 1, 0.65, 0.5);
}

function frustumLines(camera, depth) {
  const { c2w, fx, fy, cx, cy, width, height } = camera;
  const m = new THREE.Matrix4().set(...c2w.flat());
  const corners = [[0, 0], [width, 0], [width, height], [0, height]].map(([u, v]) =>
    new THREE.Vector3(((u - cx) / fx) * depth, ((v - cy) / fy) * depth, depth).applyMatrix4(m));
  const apex = new THREE.Vector3(0, 0, 0).applyMatrix4(m);
  const points = [];
  for (let i = 0; i < 4; i++) points.push(apex, corners[i], corners[i], corners[(i + 1) % 4]);
  return points;
}

const canvas = document.getElementById("view");
const renderer = new THREE.WebGLRenderer({ canvas, antialias: true });
renderer.setPixelRatio(window.devicePixelRatio);
const scene = new THREE.Scene();
scene.background = new THREE.Color(0xf4f4f4);
scene.add(new THREE.HemisphereLight(0xffffff, 0x666666, 2.2));
const sun = new THREE.DirectionalLight(0xffffff, 1.4);
scene.add(sun);
const view = new THREE.PerspectiveCamera(50, 1, 0.01, 100);
const controls = new OrbitControls(view, canvas);
const stuffGrey = new THREE.Color(0xc8c8c8);
const state = { data: null, mesh: null, lines: null, highlight: null, mode: "class", selected: 0,
  semantic: null, instance: null, fitted: false };

function render() {
  renderer.render(scene, view);
}

function paint() {
  const { mesh, semantic, instance, data } = state;
  if (!mesh) return render();
  const classColour = data.classes.map((c) => new THREE.Color(`rgb(${c.color.join(",")})`));
  const colour = new THREE.Color();
  for (let i = 0; i < data.count; i++) {
    const obj = instance[i];
    if (state.mode === "class") colour.copy(classColour[semantic[i]] || stuffGrey);
    else colour.copy(obj ? objectColour(obj) : stuffGrey);
    if (state.selected && obj !== state.selected) colour.lerp(stuffGrey, 0.75);
    mesh.setColorAt(i, colour);
  }
  if (mesh.instanceColor) mesh.instanceColor.needsUpdate = true;
  render();
}

function show(id) {
  state.selected = id;
  if (state.highlight) scene.remove(state.highlight);
  state.highlight = null;
  for (const li of document.querySelectorAll("#objects li")) {
    li.classList.toggle("selected", Number(li.dataset.id) === state.selected);
  }
  const obj = state.data.objects.find((o) => o.id === state.selected);
  if (obj) {
    const b = new THREE.Box3(new THREE.Vector3(...obj.box_min), new THREE.Vector3(...obj.box_max));
    state.highlight = new THREE.Box3Helper(b, 0xff00ff);
    scene.add(state.highlight);
  }
  document.body.dataset.selected = String(state.selected);
  paint();
}

function lists(data) {
  const legend = document.getElementById("legend");
  legend.replaceChildren();
  for (const c of data.classes) {
    if (!c.present) continue;
    const li = document.createElement("li");
    li.innerHTML = `<span class="swatch" style="background: rgb(${c.color.join(",")})"></span>`;
    li.append(c.name);
    legend.append(li);
  }
  const list = document.getElementById("objects");
  list.replaceChildren();
  for (const o of data.objects) {
    const li = document.createElement("li");
    li.dataset.id = o.id;
    li.classList.toggle("selected", o.id === state.selected);
    const extent = o.box_max.map((v, k) => (v - o.box_min[k]).toFixed(2)).join(" x ");
    li.textContent = `#${o.id} ${o.class_name} (${extent} m)`;
    li.addEventListener("click", () => show(state.selected === o.id ? 0 : o.id));
    list.append(li);
  }
  document.getElementById("summary").textContent =
    `${data.count} voxels drawn, ${data.objects.length} objects` + (data.frames ? `, ${data.frames} frames` : "");
}

// (re)draw a scene's data: one instanced cube per voxel; the view is fitted to the first scene only
function load(data) {
  for (const old of [state.mesh, state.lines]) {
    if (old) {
      scene.remove(old);
      old.geometry.dispose();
    }
  }
  state.data = data;
  state.semantic = decode(data.semantic, Uint8Array);
  state.instance = decode(data.instance, Uint32Array);
  const coords = decode(data.coords, Int32Array);
  const size = data.voxel_size;
  const mesh = new THREE.InstancedMesh(new THREE.BoxGeometry(size, size, size), new THREE.MeshLambertMaterial(),
    Math.max(data.count, 1));
  mesh.count = data.count;
  const matrix = new THREE.Matrix4();
  const box = new THREE.Box3();
  const p = new THREE.Vector3();
  for (let i = 0; i < data.count; i++) {
    p.set((coords[3 * i] + 0.5) * size, (coords[3 * i + 1] + 0.5) * size, (coords[3 * i + 2] + 0.5) * size);
    matrix.makeTranslation(p.x, p.y, p.z);
    mesh.setMatrixAt(i, matrix);
    box.expandByPoint(p);
  }
  scene.add(mesh);
  state.mesh = mesh;
  const frusta = [];
  for (const cam of data.cameras) frusta.push(...frustumLines(cam, data.frustum_depth));
  state.lines = null;
  if (frusta.length) {
    state.lines = new THREE.LineSegments(new THREE.BufferGeometry().setFromPoints(frusta),
      new THREE.LineBasicMaterial({ color: 0x222222 }));
    scene.add(state.lines);
  }
  if (!state.fitted && data.count) {
    // up is the cameras' up (OpenCV: -y of the camera); from above and behind the first camera's heading,
    // steep enough to look into a room over its near wall
    const up = new THREE.Vector3(...data.up);
    const centre = box.getCenter(new THREE.Vector3());
    const radius = Math.max(box.getSize(new THREE.Vector3()).length() / 2, 0.1);
    view.near = radius / 100;
    view.far = radius * 20;
    view.up.copy(up);
    view.position.copy(centre).addScaledVector(new THREE.Vector3(...data.forward), -0.7 * radius)
      .addScaledVector(up, 2.2 * radius);
    sun.position.copy(view.position);
    controls.target.copy(centre);
    controls.update();
    state.fitted = true;
  }
  if (state.selected && !data.objects.some((o) => o.id === state.selected)) state.selected = 0;
  lists(data);
  show(state.selected);   // redraws the box and the colours
}

function resize() {
  const w = canvas.clientWidth, h = canvas.clientHeight;
  renderer.setSize(w, h, false);
  view.aspect = w / Math.max(h, 1);
  view.updateProjectionMatrix();
  render();
}

async function follow(url, seen) {
  try {
    const response = await fetch(url, { cache: "no-store" });
    if (response.ok) {
      const data = await response.json();
      if (data.version !== seen) {
        seen = data.version;
        load(data);
        document.body.dataset.version = String(seen);
      }
      document.body.dataset.live = data.done ? "done" : "running";
      if (data.done) return;
    }
  } catch (err) {
    document.body.dataset.live = "waiting";   // not written yet, or the server went away
  }
  setTimeout(() => follow(url, seen), 1500);
}

controls.addEventListener("change", render);
document.getElementById("mode").addEventListener("click", (e) => {
  state.mode = state.mode === "class" ? "instance" : "class";
  e.target.textContent = state.mode === "class" ? "colour by object" : "colour by class";
  document.body.dataset.mode = state.mode;
  paint();
});
window.addEventListener("resize", resize);
document.body.dataset.mode = state.mode;
document.body.dataset.selected = "0";
resize();
const page = JSON.parse(document.getElementById("scene-data").textContent);
if (page.live) follow(page.live, null);
else load(page);
document.body.dataset.ready = "true";
