"""Point-BERT grouping: deterministic FPS from index 0, kNN neighbourhoods centred on their centre."""

import torch

from training.config import RegionBLIPConfig
from training.pointbert import PointBERT, farthest_point_sample, group_points


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
