"""The oracles bench/visible_oracle.py and bench/label_oracle.py decompose PRQ with, and bench/label_visibility.py's
split of the 3D labels' errors: on a tiny frustum whose answers are known (a wall 3 m away, a box hidden behind it);
and bench/depth_by_class.py's per-image scale error."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from depth_by_class import image_scale_errors  # noqa: E402
from label_oracle import majority_class_per_group, nearest_truth_labels  # noqa: E402
from label_visibility import counts_by_group, near_other  # noqa: E402
from visible_oracle import lift_pixels, visible_voxels  # noqa: E402

from nvpanoptix3d.geometry import FrustumGrid, Intrinsics  # noqa: E402
from nvpanoptix3d.labels import NAMES  # noqa: E402
from nvpanoptix3d.model.frustum3d import Lifter  # noqa: E402

WALL, BOX = 1, 5


@pytest.fixture
def grid():
    return FrustumGrid(Intrinsics.front3d().scaled(40, 30), 0.2, 0.4, 6.0, (48, 48, 48))


def voxels_where(grid, keep) -> torch.Tensor:
    """Frustum voxels whose centres satisfy keep(centres) -> V x 3."""
    mask = grid.frustum_mask()
    index = mask.nonzero()
    return index[keep(grid.grid_to_camera(index))]


def test_lifting_a_wall_puts_each_pixel_on_its_depth_with_its_label(grid):
    depth = torch.full((30, 40), 3.0)
    depth[0, 0] = 0.0  # no depth: not lifted
    semantic = torch.full((30, 40), WALL)
    instance = torch.zeros(30, 40, dtype=torch.long)
    index, sem, inst = lift_pixels(depth, semantic, instance, grid, thickness=0)
    z = grid.grid_to_camera(index)[:, 2]
    assert len(index) > 0 and (z - 3.0).abs().max() <= grid.voxel_size / 2 + 1e-5
    assert index.unique(dim=0).shape == index.shape
    assert (sem == WALL).all() and (inst == 0).all()
    thick, _, _ = lift_pixels(depth, semantic, instance, grid, thickness=2)
    z_thick = grid.grid_to_camera(thick)[:, 2]
    # two voxels behind the surface, none in front of it
    assert z_thick.min() >= 3.0 - grid.voxel_size / 2 - 1e-5 and z_thick.max() > 3.0 + 1.5 * grid.voxel_size


def test_unlabelled_pixels_are_not_lifted(grid):
    depth = torch.full((30, 40), 3.0)
    semantic = torch.zeros(30, 40, dtype=torch.long)
    semantic[:, :20] = WALL
    index, sem, _ = lift_pixels(depth, semantic, torch.zeros_like(semantic), grid, thickness=0)
    x = grid.grid_to_camera(index)[:, 0]
    assert (sem == WALL).all() and x.max() <= grid.voxel_size  # only the image's left half (x < 0)


def test_only_voxels_at_or_in_front_of_the_surface_are_visible(grid):
    depth = torch.full((30, 40), 3.0)
    wall = voxels_where(grid, lambda p: (p[:, 2] - 3.0).abs() < 0.1)
    hidden = voxels_where(grid, lambda p: (p[:, 2] > 3.5) & (p[:, 2] < 4.5))
    index = torch.cat([wall, hidden])
    seen = visible_voxels(index, depth, grid, tolerance=1)
    assert seen[:len(wall)].all() and not seen[len(wall):].any()
    # a voxel one and a half voxels behind the surface is visible only with a tolerance of two
    behind = voxels_where(grid, lambda p: (p[:, 2] - 3.3).abs() < 0.1)
    assert not visible_voxels(behind, depth, grid, 1).any() and visible_voxels(behind, depth, grid, 2).all()


def test_predicted_voxels_take_the_label_of_the_nearest_true_voxel():
    dims = (16, 16, 16)
    gt_index = torch.tensor([[2, 2, 2], [12, 12, 12]])
    gt_semantic, gt_instance = torch.tensor([WALL, BOX]), torch.tensor([0, 7])
    pred = torch.tensor([[2, 2, 2], [3, 2, 1], [11, 13, 12], [9, 9, 9]])
    semantic, instance = nearest_truth_labels(pred, gt_index, gt_semantic, gt_instance, dims)
    assert semantic.tolist() == [WALL, WALL, BOX, BOX]
    assert instance.tolist() == [0, 0, 7, 7]


def test_grouping_by_true_segment_gives_each_group_its_majority_predicted_class():
    """Two true boxes (instances 7 and 8) and the wall; the product called one box voxel a wall and the wall's
    voxels box and wall."""
    true_semantic = torch.tensor([BOX, BOX, BOX, BOX, WALL, WALL, WALL])
    true_instance = torch.tensor([7, 7, 7, 8, 0, 0, 0])
    predicted = torch.tensor([BOX, WALL, BOX, BOX, WALL, BOX, WALL])
    semantic, group = majority_class_per_group(true_semantic, true_instance, predicted)
    assert semantic.tolist() == [BOX, BOX, BOX, BOX, WALL, WALL, WALL]
    assert len(set(group[:3].tolist())) == 1 and len(set(group.tolist())) == 3 and (group > 0).all()


def test_label_errors_split_by_how_far_behind_the_depth_a_voxel_lies(grid):
    """A wall at 3 m: its voxels are visible, a box 0.6 m (3 voxels of 0.2 m) behind it is near, one 2 m behind
    occluded; the box behind is called wall in one of its two voxels, the far box in both."""
    depth = torch.full((1, 30, 40), 3.0)
    wall = voxels_where(grid, lambda p: ((p[:, 2] - 3.0).abs() < 0.1) & (p[:, 0].abs() < 0.3) & (p[:, 1].abs() < 0.3))
    near = voxels_where(grid, lambda p: ((p[:, 2] - 3.6).abs() < 0.1) & (p[:, 0].abs() < 0.3) & (p[:, 1].abs() < 0.3))
    far = voxels_where(grid, lambda p: ((p[:, 2] - 5.0).abs() < 0.1) & (p[:, 0].abs() < 0.3) & (p[:, 1].abs() < 0.3))
    behind = Lifter(grid).behind_depth(torch.cat([wall[:1], near[:2], far[:2]])[None], 1, depth)[1][0]
    assert behind[0].abs() < 0.6 and (behind[1:3] - 3).abs().max() < 0.6 and (behind[3:] - 10).abs().max() < 0.6
    true = torch.tensor([WALL, BOX, BOX, BOX, BOX])
    predicted = torch.tensor([WALL, BOX, WALL, WALL, WALL])
    voxels, right = counts_by_group(behind, predicted == true)
    assert voxels.tolist() == [1, 2, 2] and right.tolist() == [1, 1, 0]


def test_a_voxel_counts_as_right_when_within_one_voxel_of_the_other_set_diagonals_included():
    truth = torch.tensor([[5, 5, 5], [0, 0, 0]])
    predicted = torch.tensor([[5, 5, 5], [6, 6, 6], [7, 5, 5], [5, 5, 3], [1, 0, 1], [9, 9, 9]])
    assert near_other(predicted, truth, (10, 10, 10)).tolist() == [True, True, False, False, True, False]
    assert near_other(truth, predicted, (10, 10, 10)).tolist() == [True, True]


def test_an_images_scale_error_is_the_median_ratio_of_each_group_away_from_depth_edges():
    gt = torch.full((4, 6), 4.0)
    semantic = torch.tensor(NAMES.index("wall")).repeat(4, 6)
    semantic[2:] = NAMES.index("floor")
    pred = gt * 1.05
    pred[2:] = gt[2:] * 0.9
    pred[0, 0] = 40.0  # one wild pixel moves no median
    edge = torch.zeros(4, 6, dtype=torch.bool)
    edge[1] = True  # the walls' second row sits at a depth edge: left out of the walls' group
    pred[1] = gt[1] * 2.0
    gt[3, 5] = 0.0  # no depth: left out everywhere
    errors = image_scale_errors(pred, gt, semantic, edge)
    assert errors["wall"] == pytest.approx(0.05, abs=1e-5)
    assert errors["floor"] == pytest.approx(-0.1, abs=1e-5)
    # over all 23 valid pixels: 11 at 0.9, 5 at 1.05 (one at 10), 6 at 2.0 -> the median (12th) is 1.05
    assert errors["all"] == pytest.approx(0.05, abs=1e-5)
    assert set(image_scale_errors(pred, gt, torch.zeros_like(semantic), edge)) == {"all"}  # no wall, no floor
