// The scene page: a panoptic voxel scene drawn with three.js, coloured by class or by object, with the objects
// list, their boxes and the camera frusta. The page inlines its data (JSON, arrays in base64) and this script,
// so it opens from the file system and from a static bucket with nothing fetched.
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

function main() {
  const data = JSON.parse(document.getElementById("scene-data").textContent);
  const n = data.count;
  const coords = decode(data.coords, Int32Array);
  const semantic = decode(data.semantic, Uint8Array);
  const instance = decode(data.instance, Uint32Array);
  const size = data.voxel_size;

  const canvas = document.getElementById("view");
  const renderer = new THREE.WebGLRenderer({ canvas, antialias: true });
  renderer.setPixelRatio(window.devicePixelRatio);
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0xf4f4f4);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x666666, 2.2));
  const sun = new THREE.DirectionalLight(0xffffff, 1.4);
  scene.add(sun);

  // one instanced cube per voxel
  const cube = new THREE.BoxGeometry(size, size, size);
  const material = new THREE.MeshLambertMaterial();
  const mesh = new THREE.InstancedMesh(cube, material, Math.max(n, 1));
  mesh.count = n;
  const matrix = new THREE.Matrix4();
  const box = new THREE.Box3();
  const p = new THREE.Vector3();
  for (let i = 0; i < n; i++) {
    p.set((coords[3 * i] + 0.5) * size, (coords[3 * i + 1] + 0.5) * size, (coords[3 * i + 2] + 0.5) * size);
    matrix.makeTranslation(p.x, p.y, p.z);
    mesh.setMatrixAt(i, matrix);
    box.expandByPoint(p);
  }
  scene.add(mesh);

  const classColour = data.classes.map((c) => new THREE.Color(`rgb(${c.color.join(",")})`));
  const stuffGrey = new THREE.Color(0xc8c8c8);
  let mode = "class";
  let selected = 0;
  const colour = new THREE.Color();
  function paint() {
    for (let i = 0; i < n; i++) {
      const obj = instance[i];
      if (mode === "class") colour.copy(classColour[semantic[i]] || stuffGrey);
      else colour.copy(obj ? objectColour(obj) : stuffGrey);
      if (selected && obj !== selected) colour.lerp(stuffGrey, 0.75);
      mesh.setColorAt(i, colour);
    }
    if (mesh.instanceColor) mesh.instanceColor.needsUpdate = true;
    render();
  }

  // camera frusta
  const frusta = [];
  for (const cam of data.cameras) frusta.push(...frustumLines(cam, data.frustum_depth));
  if (frusta.length) {
    const lines = new THREE.LineSegments(new THREE.BufferGeometry().setFromPoints(frusta),
      new THREE.LineBasicMaterial({ color: 0x222222 }));
    scene.add(lines);
  }

  // view: up is the cameras' up (OpenCV: -y of the camera); from above and behind the first camera's heading,
  // steep enough to look into a room over its near wall
  const up = new THREE.Vector3(...data.up);
  const centre = box.isEmpty() ? new THREE.Vector3() : box.getCenter(new THREE.Vector3());
  const radius = box.isEmpty() ? 1 : box.getSize(new THREE.Vector3()).length() / 2;
  const view = new THREE.PerspectiveCamera(50, 1, radius / 100, radius * 20);
  view.up.copy(up);
  const forward = new THREE.Vector3(...data.forward);
  view.position.copy(centre).addScaledVector(forward, -0.7 * radius).addScaledVector(up, 2.2 * radius);
  sun.position.copy(view.position);
  const controls = new OrbitControls(view, canvas);
  controls.target.copy(centre);
  controls.update();
  controls.addEventListener("change", render);

  let highlight = null;
  function select(id) {
    selected = selected === id ? 0 : id;
    if (highlight) scene.remove(highlight);
    highlight = null;
    for (const li of document.querySelectorAll("#objects li")) {
      li.classList.toggle("selected", Number(li.dataset.id) === selected);
    }
    const obj = data.objects.find((o) => o.id === selected);
    if (obj) {
      const b = new THREE.Box3(new THREE.Vector3(...obj.box_min), new THREE.Vector3(...obj.box_max));
      highlight = new THREE.Box3Helper(b, 0xff00ff);
      scene.add(highlight);
    }
    document.body.dataset.selected = String(selected);
    paint();
  }

  // the side panel: mode toggle, legend, objects
  document.getElementById("mode").addEventListener("click", (e) => {
    mode = mode === "class" ? "instance" : "class";
    e.target.textContent = mode === "class" ? "colour by object" : "colour by class";
    document.body.dataset.mode = mode;
    paint();
  });
  const legend = document.getElementById("legend");
  for (const c of data.classes) {
    if (!c.present) continue;
    const li = document.createElement("li");
    li.innerHTML = `<span class="swatch" style="background: rgb(${c.color.join(",")})"></span>`;
    li.append(c.name);
    legend.append(li);
  }
  const list = document.getElementById("objects");
  for (const o of data.objects) {
    const li = document.createElement("li");
    li.dataset.id = o.id;
    const extent = o.box_max.map((v, k) => (v - o.box_min[k]).toFixed(2)).join(" x ");
    li.textContent = `#${o.id} ${o.class_name} (${extent} m)`;
    li.addEventListener("click", () => select(o.id));
    list.append(li);
  }

  function resize() {
    const w = canvas.clientWidth, h = canvas.clientHeight;
    renderer.setSize(w, h, false);
    view.aspect = w / Math.max(h, 1);
    view.updateProjectionMatrix();
    render();
  }
  function render() {
    renderer.render(scene, view);
    document.body.dataset.frames = String(Number(document.body.dataset.frames || 0) + 1);
  }
  window.addEventListener("resize", resize);
  document.body.dataset.mode = mode;
  document.body.dataset.selected = "0";
  resize();
  paint();
  document.body.dataset.ready = "true";
}

main();
