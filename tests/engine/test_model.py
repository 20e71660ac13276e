"""Autoencoder, hash head and DEC pseudo-labels."""

from __future__ import annotations

import torch
from mrhash.model.networks import HashHead, MultiSourceAutoencoder, TargetBlock
from mrhash.model.pseudolabels import kl_divergence, kmeans, soft_assign, target_distribution


def test_autoencoder_reconstructs_every_block_and_weights_them() -> None:
    blocks = [TargetBlock("primary", "features", 20), TargetBlock("nir", "stats", 2, 3.0)]
    ae = MultiSourceAutoencoder(blocks, in_dim=20, latent_dim=4, hidden=8)
    x = torch.randn(5, 20)
    latent, outs = ae(x)
    assert latent.shape == (5, 4) and [o.shape for o in outs] == [(5, 20), (5, 2)]
    zeros = [torch.zeros_like(o) for o in outs]
    expected = (torch.mean(outs[0] ** 2) + 3.0 * torch.mean(outs[1] ** 2)) / 4.0
    assert torch.allclose(ae.reconstruction_loss(outs, zeros), expected)


def test_autoencoder_learns_to_reconstruct() -> None:
    torch.manual_seed(0)
    blocks = [TargetBlock("primary", "features", 6)]
    ae = MultiSourceAutoencoder(blocks, in_dim=6, latent_dim=3, hidden=16)
    x = torch.randn(64, 3) @ torch.randn(3, 6)  # rank-3 data fits a 3-d latent
    opt = torch.optim.Adam(ae.parameters(), lr=1e-2)
    first = ae.reconstruction_loss(ae(x)[1], [x]).item()
    for _ in range(200):
        loss = ae.reconstruction_loss(ae(x)[1], [x])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first


def test_hash_head_outputs_relaxed_bits_after_standardisation() -> None:
    head = HashHead(16, in_dim=8)
    feats = torch.randn(4, 8) * 100 + 50
    head.set_standardisation(feats.mean(dim=0), feats.std(dim=0))
    code = head(feats)
    assert code.shape == (4, 16) and bool((code.abs() < 1).all())
    expected = torch.tanh(head.linear((feats - feats.mean(0)) / feats.std(0)))
    assert torch.allclose(code, expected)


def test_kmeans_finds_separated_groups_deterministically() -> None:
    gen = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.3 * torch.randn(30, 2, generator=gen) for c in centres])
    found = kmeans(x, 3, generator=torch.Generator().manual_seed(0))
    again = kmeans(x, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(found, again)
    assert torch.cdist(centres, found).min(dim=1).values.max() < 0.3


def test_soft_assignment_and_sharpened_target() -> None:
    z = torch.tensor([[0.0, 0.0], [0.9, 1.0], [2.0, 2.0]])
    centres = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    q = soft_assign(z, centres)
    assert torch.allclose(q.sum(dim=1), torch.ones(3))
    assert q[0, 0] > 0.5 and q[2, 1] > 0.5
    p = target_distribution(q)
    assert torch.allclose(p.sum(dim=1), torch.ones(3))
    assert p[0, 0] > q[0, 0] and p[2, 1] > q[2, 1]  # confident rows get sharper
    assert float(kl_divergence(q, q)) < 1e-6 < float(kl_divergence(p, q))


def test_adjusted_rand_index_is_label_free_agreement() -> None:
    from mrhash.model.pseudolabels import adjusted_rand_index

    a = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    renamed = torch.tensor([2, 2, 2, 0, 0, 0, 1, 1, 1])  # same groups, other cluster ids
    assert adjusted_rand_index(a, renamed) == 1.0
    one_moved = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2, 2])
    assert 0.3 < adjusted_rand_index(a, one_moved) < 1.0
    # independent random partitions agree at chance level (ARI ~ 0)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randint(4, (2000,), generator=gen), torch.randint(4, (2000,), generator=gen)
    assert abs(adjusted_rand_index(x, y)) < 0.01


def test_agreement_keeps_the_typical_restart() -> None:
    from mrhash.model.pseudolabels import kmeans, most_agreeing

    typical = torch.tensor([0, 0, 1, 1, 2, 2])
    odd = torch.tensor([0, 1, 2, 0, 1, 2])
    assert most_agreeing([odd, typical, typical.flip(0), typical]) == 1
    assert most_agreeing([odd, typical]) == 0  # two cannot outvote each other: the first
    gen = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.3 * torch.randn(30, 2, generator=gen) for c in centres])
    found = kmeans(x, 3, n_init=6, select="agreement", generator=torch.Generator().manual_seed(0))
    assert torch.cdist(centres, found).min(dim=1).values.max() < 0.3


def test_similarity_loss_is_zero_only_for_the_same_ranking_geometry() -> None:
    from mrhash.model.train import similarity_loss

    gen = torch.Generator().manual_seed(0)
    latent = torch.randn(16, 8, generator=gen)
    assert float(similarity_loss(latent, latent)) < 1e-10
    assert float(similarity_loss(3 * latent, latent)) < 1e-10  # scale-free: cosines
    rotated = latent @ torch.linalg.qr(torch.randn(8, 8, generator=gen))[0]
    assert float(similarity_loss(rotated, latent)) < 1e-10  # any code basis is as good
    assert float(similarity_loss(torch.randn(16, 8, generator=gen), latent)) > 0.05
