"""Point-BERT grouping: deterministic FPS from index 0, kNN neighbourhoods centred on their centre."""

import torch

from training.config import RegionBLIPConfig
from training.pointbert import PointBERT, farthest_point_sample, group_points, nearest_neighbours


def cloud(seed=0, n=200):
    return torch.randn(2, n, 3, generator=torch.Generator().manual_seed(seed))


def test_farthest_point_sampling_starts_at_index_zero_and_picks_the_farthest_points():
    line = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [4, 0, 0], [9, 0, 0]]])
    assert farthest_point_sample(line, 3).tolist() == [[0, 5, 4]]


def test_grouping_is_deterministic():
    points = cloud()
    first_groups, first_centres = group_points(points, num_group=16, group_size=8)
    second_groups, second_centres = group_points(points.clone(), num_group=16, group_size=8)
    assert torch.equal(first_groups, second_groups) and torch.equal(first_centres, second_centres)
    assert torch.equal(first_centres[:, 0], points[:, 0])


def test_groups_are_the_nearest_points_centred_on_their_centre():
    points = cloud(seed=1)
    groups, centres = group_points(points, num_group=4, group_size=5)
    assert groups.shape == (2, 4, 5, 3) and centres.shape == (2, 4, 3)
    for b in range(2):
        for g in range(4):
            distances = (points[b] - centres[b, g]).norm(dim=-1)
            nearest = points[b, distances.argsort()[:5]] - centres[b, g]
            torch.testing.assert_close(groups[b, g].norm(dim=-1).sort().values, nearest.norm(dim=-1))
    assert torch.equal(groups[:, :, 0], torch.zeros(2, 4, 3))  # each centre is its own nearest neighbour


def test_encoder_gives_a_cls_token_plus_one_token_per_group_and_repeats_exactly():
    torch.manual_seed(0)
    config = RegionBLIPConfig.preset("tiny")
    encoder = PointBERT(config).eval()
    points = cloud(seed=2)
    tokens = encoder(points)
    assert tokens.shape == (2, 1 + config.point_num_group, config.point_trans_dim)
    assert torch.equal(encoder(points), tokens)


def centres_of(points, num_group):
    rows = torch.arange(points.shape[0])[:, None]
    return points[rows, farthest_point_sample(points, num_group)]


def cdist_neighbours(centres, points, group_size):
    """The reference: cdist from the coordinate differences themselves (no matmul), its nearest `group_size`."""
    distance = torch.cdist(centres, points, compute_mode="donot_use_mm_for_euclid_dist").square()
    return distance.topk(group_size, dim=-1, largest=False)


def test_matmul_distances_pick_the_same_neighbour_sets_as_cdist():
    for seed in range(3):
        points = cloud(seed, n=2000)
        centres = centres_of(points, 64)
        expected = cdist_neighbours(centres, points, 16)
        distances, neighbours = nearest_neighbours(centres, points, 16)
        assert torch.equal(neighbours.sort(-1).values, expected.indices.sort(-1).values)
        torch.testing.assert_close(distances, expected.values, atol=1e-5, rtol=0)
        assert (distances >= 0).all()  # rounding below zero is clamped


def test_groups_equal_the_cdist_groups_wherever_the_distances_are_not_ties():
    points = cloud(seed=3, n=2000)
    groups, centres = group_points(points, num_group=64, group_size=16)
    distance, neighbours = cdist_neighbours(centres, points, group_size=17)  # the 17th: is the cut a tie?
    rows = torch.arange(2)[:, None, None]
    expected = points[rows, neighbours[..., :16]] - centres[:, :, None]  # (B, G, M, 3)
    # Two distances within float32 rounding of each other may come out in either order, or swap at the cut.
    distinct = (distance.diff(dim=-1) > 1e-5).all(-1)  # (B, G)
    assert distinct.float().mean() > 0.8
    assert torch.equal(groups[distinct], expected[distinct])


def test_a_scene_far_from_its_frame_origin_keeps_its_exact_neighbours():
    # an 8 x 8 x 3 m room 100 m from the origin: |p|² ~ 1e4 would swamp the neighbours' ~1e-2 m² differences
    room = torch.rand(2, 8000, 3, generator=torch.Generator().manual_seed(4)) * torch.tensor([8.0, 8.0, 3.0]) + 100
    centres = centres_of(room, 64)
    exact = (centres.double()[:, :, None] - room.double()[:, None]).square().sum(-1)  # (B, G, N)
    expected = exact.topk(32, dim=-1, largest=False).indices.sort(-1).values
    got = nearest_neighbours(centres, room, 32)[1].sort(-1).values
    assert torch.equal(got, expected)
