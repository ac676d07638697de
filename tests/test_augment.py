import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnkit.data.augment import (AugmentConfig, MixedLabels, Preprocess, cutout, mix_batch, random_crop, random_flip,
                                 evaluation_views)


def ramp(n=4, c=2, h=8, w=8):
    return torch.arange(n * c * h * w, dtype=torch.float32).reshape(n, c, h, w)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 5), h=st.integers(2, 12), w=st.integers(2, 12), pad=st.integers(0, 4))
def test_random_crop_keeps_shape_and_is_a_translation(n, h, w, pad):
    x = torch.rand(n, 3, h, w) + 1  # strictly positive so zero padding is recognisable
    out = random_crop(x, pad, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    for i in range(n):  # each output is exactly one window of the padded image
        windows = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   if torch.equal(padded[i, :, dy:dy + h, dx:dx + w], out[i])]
        assert windows


def test_flip_is_per_sample_and_an_involution():
    x = ramp(64)
    g = torch.Generator().manual_seed(3)
    out = random_flip(x, g)
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept)) and 10 < sum(flipped) < 54
    assert torch.equal(random_flip(out, torch.Generator().manual_seed(3)), x)


def test_cutout_erases_at_most_the_square():
    x = torch.ones(32, 3, 16, 16)
    out = cutout(x, 6, torch.Generator().manual_seed(0))
    erased = (out[:, 0] == 0).flatten(1).sum(1)
    assert (erased <= 36).all() and (erased > 0).all()
    assert torch.equal((out == 0).all(1), (out[:, :1] == 0).squeeze(1))  # same square in every channel


def test_augmentation_is_reproducible_from_the_generator():
    pre = Preprocess((0.5,), (0.25,), augment=AugmentConfig(crop=2, flip=True, cutout=4))
    images = torch.randint(0, 256, (16, 1, 12, 12), dtype=torch.uint8)
    a = pre(images, train=True, generator=torch.Generator().manual_seed(7))
    b = pre(images, train=True, generator=torch.Generator().manual_seed(7))
    c = pre(images, train=True, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_preprocess_pads_small_images_and_normalises():
    pre = Preprocess((0.5,), (0.5,), input_size=(32, 32))
    images = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    out = pre(images)
    assert out.shape == (2, 1, 32, 32)
    assert torch.allclose(out[:, :, 2:30, 2:30], torch.ones(1)) and torch.allclose(out[:, :, 0], -torch.ones(1))
    assert Preprocess((0.5,), (0.5,), input_size=(16, 16))(images).shape == (2, 1, 16, 16)


def test_mixup_blends_pairs_and_their_labels_in_one_proportion():
    x = torch.rand(8, 3, 6, 6)
    labels = torch.arange(8)
    mixed, targets = mix_batch(x, labels, mixup=0.4, generator=torch.Generator().manual_seed(0))
    assert isinstance(targets, MixedLabels) and 0 < targets.weight < 1 and torch.equal(targets.first, labels)
    partner = targets.second  # labels are the indices here, so they name each image's partner
    assert torch.allclose(mixed, targets.weight * x + (1 - targets.weight) * x[partner])
    assert sorted(partner.tolist()) == list(range(8))
    again, same = mix_batch(x, labels, mixup=0.4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, mixed) and torch.equal(same.second, partner) and same.weight == targets.weight
    assert mix_batch(x, labels)[1] is labels  # both off: untouched


def test_cutmix_pastes_one_box_and_weights_labels_by_its_area():
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 10, 10).contiguous()  # image i is filled with i
    for seed in range(5):
        mixed, targets = mix_batch(x, torch.arange(4), cutmix=1.0, generator=torch.Generator().manual_seed(seed))
        for i in range(4):
            pasted = (mixed[i] != i).float().mean().item() if targets.second[i] != i else None
            if pasted is not None:  # the share of pixels from the partner is the partner's label weight
                assert pasted == pytest.approx(1 - targets.weight)
            assert set(mixed[i].unique().tolist()) <= {float(i), float(targets.second[i])}


def test_evaluation_views_are_the_image_its_mirror_and_their_moved_copies():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    assert [v.shape for v in evaluation_views(x)] == [x.shape] and torch.equal(next(evaluation_views(x)), x)
    views = list(evaluation_views(x, flip=True, shift=2, mode="reflect"))
    assert len(views) == 10 and all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], x) and torch.equal(views[5], x.flip(3))
    # (dy, dx) = (2, 0): the content moves up by two rows, the bottom two rows reflected back in.
    assert torch.equal(views[1][..., :4, :], x[..., 2:, :])
    assert torch.equal(views[1][..., 4:, :], x[..., [4, 3], :])
    assert torch.equal(views[4][..., :, 2:], x[..., :, :4])  # (0, -2): moved right, zeros never appear
    zeros = list(evaluation_views(x, shift=1))[3]  # (0, 1) with zero padding: the last column is empty
    assert torch.equal(zeros[..., :5], x[..., 1:]) and not zeros[..., 5].any()
