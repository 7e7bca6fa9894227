"""Every frame's 3D prediction fused into one sparse world voxel map, one instance ID per object.

For each frame, `SceneFusion.integrate` does what the algorithm says:
1. place the frame's occupied voxels in the world through its pose and hash them into world voxels;
2. weigh each by its occupancy probability, twice as much where the camera saw it (within two voxels of the
   depth it was lifted with) as where the 3D stage completed it;
3. add that weight to the voxel's occupancy and to its class votes; voxels of the map that this frame sees in
   front of its depth get a free-space vote (what is seen empty beats what was completed), and every voxel of
   the map inside its view frustum counts one view;
4. match each of the frame's object instances to the scene's objects by 3D overlap (more of it when the frame
   gives another class: a cabinet one frame calls a dresser), or start a new object; vote for that object in
   its voxels and for the frame's class in the object.
`result()` keeps the voxels whose occupancy outweighs their free votes and whose weight reaches `min_support`
of their views (a voxel one frame in ten completed is that frame's guess, not the scene), with their majority
object and its majority class (majority class where no object).

Memory grows with the surfaces seen (the map holds only voxels some frame predicted), not the scene's box.
New voxels wait in a buffer merged into the sorted map every `flush_every` frames (one sort per batch, not per
frame; sooner while the walk-through is short); views and free-space votes read the merged map, a few frames
behind at most.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..labels import NUM_CLASSES, is_thing

_BIAS = 1 << 20               # world voxel coordinates in [-2^20, 2^20): +-31 km at 3 cm
_NEIGHBOURS = np.array([[a, b, c] for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)])
IS_THING = np.array([is_thing(c) for c in range(NUM_CLASSES)])


def pack(coords: np.ndarray) -> np.ndarray:
    c = coords.astype(np.int64) + _BIAS
    return (c[:, 0] << 42) | (c[:, 1] << 21) | c[:, 2]


def unpack(keys: np.ndarray) -> np.ndarray:
    return np.stack([(keys >> 42) & 0x1FFFFF, (keys >> 21) & 0x1FFFFF, keys & 0x1FFFFF], 1) - _BIAS


# a neighbour's key is the key plus a constant (the packing is linear), so shifting keeps sorted keys sorted
_NEIGHBOUR_STEPS = pack(_NEIGHBOURS) - pack(np.zeros((1, 3), np.int64))


def merged_unique(runs: np.ndarray, return_inverse: bool = False):
    """Sorted unique keys of a concatenation of sorted runs (and, with return_inverse, each key's index among
    them): a stable sort (timsort) merges runs instead of sorting from scratch, 10x a plain np.unique."""
    if not return_inverse:
        ordered = np.sort(runs, kind="stable")
        return ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])]
    order = np.argsort(runs, kind="stable")
    first = np.concatenate([[True], runs[order[1:]] != runs[order[:-1]]])
    inverse = np.empty(len(runs), np.int64)
    inverse[order] = np.cumsum(first) - 1
    return runs[order[first]], inverse


def dilate(keys: np.ndarray) -> np.ndarray:
    """The sorted unique keys within one voxel (26-neighbourhood) of sorted unique `keys`."""
    return merged_unique((keys[None, :] + _NEIGHBOUR_STEPS[:, None]).ravel())


@dataclass
class FrameObservation:
    """One frame's 3D prediction in its camera: what the fusion reads."""
    camera_to_world: np.ndarray   # 4 x 4, OpenCV camera
    points: np.ndarray            # V x 3 camera-space centres of its occupied voxels, metres
    semantic: np.ndarray          # V
    instance: np.ndarray          # V frame-local ids (0: stuff)
    probability: np.ndarray       # V occupancy probability
    depth: np.ndarray             # H x W metres the frame was lifted with (0: none)
    fx: float
    fy: float
    cx: float
    cy: float
    name: str = ""


@dataclass
class SceneObject:
    object_id: int
    class_id: int
    keys: np.ndarray              # sorted world voxel keys seen as this object so far
    frames: list = field(default_factory=list)
    score: float = 0.0
    class_votes: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES))  # voxels per class, all frames


@dataclass
class FusedScene:
    coords: np.ndarray            # N x 3 int world voxel coordinates
    voxel_size: float
    occupancy: np.ndarray         # N, the share of evidence for occupied
    semantic: np.ndarray          # N
    instance: np.ndarray          # N scene object ids (0: stuff)
    objects: list[SceneObject]
    trajectory: np.ndarray        # F x 3 camera centres


class SceneFusion:
    def __init__(self, voxel_size: float = 0.03, surface_band: float = 2.0, match_overlap: float = 0.2,
                 match_overlap_other_class: float = 0.5, min_support: float = 0.3, depth_range: tuple = (0.4, 6.0),
                 flush_every: int = 16):
        self.voxel_size, self.flush_every = voxel_size, flush_every
        self.min_support = min_support            # weight per view a kept voxel needs (1: every view saw it)
        self.depth_range = depth_range            # what a frame's 3D stage covers, metres
        self._buffer: list[tuple] = []           # (keys, weights, classes) of frames not merged yet
        self.surface_band = surface_band          # voxels from the lifted depth that count as seen
        self.match_overlap = match_overlap        # share of the smaller object both must cover to be one
        self.match_overlap_other_class = match_overlap_other_class
        self.keys = np.zeros(0, np.int64)         # sorted
        self._centres = np.zeros((0, 3))          # world centres of self.keys
        self.hit = np.zeros(0, np.float32)
        self.free = np.zeros(0, np.float32)
        self.views = np.zeros(0, np.float32)
        self.votes = np.zeros((0, NUM_CLASSES), np.float32)
        self.objects: list[SceneObject] = []
        self._object_votes: list[tuple] = []      # (keys, object ids, weights), summed per (key, object) now and then
        self._pending = 0
        self.trajectory: list[np.ndarray] = []

    # ------------------------------------------------------------------ the algorithm
    def integrate(self, frame: FrameObservation) -> None:
        world = frame.points @ frame.camera_to_world[:3, :3].T + frame.camera_to_world[:3, 3]
        keys = pack(np.floor(world / self.voxel_size))
        weight = (frame.probability * np.where(self._seen(frame), 1.0, 0.5)).astype(np.float32)
        self._views_and_free_space(frame)
        self._buffer.append((keys, weight, frame.semantic.astype(np.int64)))
        if len(self._buffer) >= min(self.flush_every, 1 + len(self.trajectory) // 4):  # early frames merge soon
            self._flush()
        self._associate(frame, keys, weight)
        self.trajectory.append(frame.camera_to_world[:3, 3].copy())

    def _seen(self, frame: FrameObservation) -> np.ndarray:
        """V bool: the voxel lies within the surface band of the depth at its pixel."""
        z, lifted = frame.points[:, 2], self._depth_at(frame, frame.points)[0]
        return (lifted > 0) & (np.abs(z - lifted) <= self.surface_band * self.voxel_size)

    @staticmethod
    def _depth_at(frame: FrameObservation, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The frame's depth at each point's pixel (0: no depth there) and whether the pixel is in the image."""
        z = np.maximum(points[:, 2], 1e-6)
        u = np.round(points[:, 0] / z * frame.fx + frame.cx).astype(np.int64)
        v = np.round(points[:, 1] / z * frame.fy + frame.cy).astype(np.int64)
        h, w = frame.depth.shape
        inside = (points[:, 2] > 0) & (u >= 0) & (v >= 0) & (u < w) & (v < h)
        out = np.zeros(len(points), np.float32)
        out[inside] = frame.depth[v[inside], u[inside]]
        return out, inside

    def _views_and_free_space(self, frame: FrameObservation) -> None:
        """Map voxels inside this frame's view frustum count a view; those it sees clearly in front of its depth
        get a free vote."""
        if not len(self.keys):
            return
        world_to_camera = np.linalg.inv(frame.camera_to_world)
        points = self._centres @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
        lifted, inside = self._depth_at(frame, points)
        self.views += inside & (points[:, 2] >= self.depth_range[0]) & (points[:, 2] <= self.depth_range[1])
        self.free += (lifted > 0) & (points[:, 2] < lifted - self.surface_band * self.voxel_size)

    def _flush(self) -> None:
        """Merge the buffered frames into the sorted map: one unique over old and new keys, sums by bincount."""
        if not self._buffer:
            return
        keys = np.concatenate([self.keys] + [b[0] for b in self._buffer])
        weight = np.concatenate([b[1] for b in self._buffer])
        classes = np.concatenate([b[2] for b in self._buffer])
        self._buffer = []
        merged, inverse = merged_unique(keys, return_inverse=True)   # the map's keys are one sorted run
        old, new = inverse[:len(self.keys)], inverse[len(self.keys):]
        n = len(merged)
        hit = np.bincount(old, self.hit, n) + np.bincount(new, weight, n)
        free = np.bincount(old, self.free, n)
        self.views = np.bincount(old, self.views, n).astype(np.float32)
        votes = np.zeros((n, NUM_CLASSES), np.float64)
        votes[old] = self.votes
        votes += np.bincount(new * NUM_CLASSES + classes, weight, n * NUM_CLASSES).reshape(n, NUM_CLASSES)
        self.keys, self.hit, self.free = merged, hit.astype(np.float32), free.astype(np.float32)
        self.votes = votes.astype(np.float32)
        self._centres = (unpack(merged) + 0.5) * self.voxel_size  # read by every frame's free-space votes

    def _associate(self, frame: FrameObservation, keys: np.ndarray, weight: np.ndarray) -> None:
        for local in np.unique(frame.instance[frame.instance > 0]):
            sel = frame.instance == local
            cls = int(np.bincount(frame.semantic[sel], minlength=NUM_CLASSES).argmax())
            mine = np.unique(keys[sel])
            target = self._match(mine, cls)
            if target is None:
                target = SceneObject(len(self.objects) + 1, cls, mine)
                self.objects.append(target)
            else:
                target.keys = merged_unique(np.concatenate([target.keys, mine]))
            target.class_votes += np.bincount(frame.semantic[sel], minlength=NUM_CLASSES)
            target.class_id = int(target.class_votes.argmax())
            target.frames.append(frame.name)
            self._object_votes.append((keys[sel], np.full(sel.sum(), target.object_id, np.int64),
                                       weight[sel].astype(np.float64)))
            self._pending += int(sel.sum())
        if self._pending > 4_000_000:  # bounded memory over long walk-throughs
            self._object_votes = [self._reduce_votes()]
            self._pending = len(self._object_votes[0][0])

    def _reduce_votes(self) -> tuple:
        """All object votes summed per (key, object)."""
        key = np.concatenate([v[0] for v in self._object_votes])
        obj = np.concatenate([v[1] for v in self._object_votes])
        w = np.concatenate([v[2] for v in self._object_votes])
        pairs, inverse = np.unique(np.stack([key, obj], 1), axis=0, return_inverse=True)
        return pairs[:, 0], pairs[:, 1], np.bincount(inverse.ravel(), weights=w)

    def _match(self, mine: np.ndarray, cls: int) -> SceneObject | None:
        """The scene object sharing the largest share of the smaller one's voxels (within one voxel), if that share
        reaches match_overlap (same class) or match_overlap_other_class (frames disagree on the class)."""
        grown = dilate(mine)
        best, best_share = None, 0.0
        for obj in self.objects:  # the object's voxels found in `grown`: a binary search each, no sort
            pos = np.searchsorted(grown, obj.keys).clip(max=len(grown) - 1)
            share = int((grown[pos] == obj.keys).sum()) / min(len(obj.keys), len(mine))
            if share >= (self.match_overlap if obj.class_id == cls else self.match_overlap_other_class) \
                    and share > best_share:
                best, best_share = obj, share
        return best

    # ------------------------------------------------------------------ the map
    def result(self, min_weight: float = 0.5) -> FusedScene:
        self._flush()
        occupancy = self.hit / np.maximum(self.hit + self.free, 1e-6)
        keep = (occupancy > 0.5) & (self.hit >= min_weight) & (self.hit >= self.min_support * self.views)
        votes = self.votes[keep].copy()
        votes[:, 0] = -1                                               # occupied voxels are never void
        semantic = votes.argmax(1)
        instance = np.zeros(keep.sum(), np.int64)
        if self._object_votes:
            key, obj, total = self._reduce_votes()
            order = np.lexsort((-total, key))                          # per key, the heaviest object first
            first = np.concatenate([[True], key[order[1:]] != key[order[:-1]]])
            best_key, best_obj = key[order[first]], obj[order[first]]
            kept_keys = self.keys[keep]
            pos = np.searchsorted(best_key, kept_keys).clip(max=len(best_key) - 1)
            found = best_key[pos] == kept_keys
            instance[found] = best_obj[pos[found]]
        if self.objects:  # an object's voxels take its class: one chair is not part chair, part sofa
            class_of = np.zeros(len(self.objects) + 1, np.int64)
            for o in self.objects:
                class_of[o.object_id] = o.class_id
            semantic = np.where(instance > 0, class_of[instance], semantic)
        instance[~IS_THING[semantic]] = 0
        present = set(np.unique(instance[instance > 0]).tolist())
        objects = [o for o in self.objects if o.object_id in present]
        return FusedScene(unpack(self.keys[keep]), self.voxel_size, occupancy[keep], semantic, instance, objects,
                          np.array(self.trajectory).reshape(-1, 3))
