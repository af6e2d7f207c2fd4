"""segmodels.training.augment: batch augmentation on the frames' device."""

import pytest
import torch

from segmodels.training import augment


def test_crop_at_scale_one_is_an_exact_window_of_the_frame():
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(6, 3, 8, 10)
    masks = torch.randint(0, 12, (6, 8, 10))
    crops, labels = augment.scale_crop_flip(images, masks, (4, 6), (1.0, 1.0), generator, ignore_index=11)
    flips = 0
    for image, mask, crop, label in zip(images, masks, crops, labels):
        windows = [(top, left, flip) for top in range(5) for left in range(5) for flip in (False, True)
                   if torch.allclose((image[:, top:top + 4, left:left + 6].flip(-1) if flip else image[:, top:top + 4, left:left + 6]), crop, atol=1e-6)]
        assert len(windows) == 1
        top, left, flip = windows[0]
        window = mask[top:top + 4, left:left + 6]
        assert torch.equal(window.flip(-1) if flip else window, label)
        flips += flip
    assert 0 < flips < 6


def test_downscaled_frames_are_padded_black_with_void_labels():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 20, 20) * 0.5 + 0.5
    masks = torch.randint(0, 5, (4, 20, 20))
    crops, labels = augment.scale_crop_flip(images, masks, (16, 16), (0.5, 0.5), generator, ignore_index=11)
    assert torch.equal(labels == 11, crops.amax(1) == 0)
    assert ((labels == 11).flatten(1).sum(1) == 16 * 16 - 10 * 10).all()
    assert set(labels.unique().tolist()) <= set(range(5)) | {11}


def test_color_jitter_scales_a_grey_frame_by_the_brightness_range_only():
    grey = torch.full((64, 3, 5, 5), 0.5)
    jittered = augment.color_jitter(grey, torch.Generator().manual_seed(0))
    values = jittered[:, :, 0, 0]
    assert torch.allclose(jittered, values[:, :, None, None].expand_as(jittered), atol=1e-6)
    assert torch.allclose(values, values[:, :1].expand_as(values), atol=1e-5)
    assert values.min() >= 0.35 - 1e-6 and values.max() <= 0.65 + 1e-6 and values.std() > 0.03
    assert torch.allclose(augment.hue_rotations(torch.zeros(2)), torch.eye(3, dtype=torch.float64).expand(2, 3, 3), atol=1e-12)


def test_photometric_none_keeps_the_frames_and_strong_stays_in_range():
    images = torch.rand(8, 3, 6, 6)
    generator = torch.Generator().manual_seed(1)
    assert torch.equal(augment.photometric(images, "none", generator), images)
    strong = augment.photometric(images, "strong", generator)
    assert strong.min() >= 0 and strong.max() <= 1 and (strong - images).abs().mean() > 0.01


def test_gamma_and_noise_darken_or_brighten_a_grey_frame_within_the_gamma_range():
    grey = torch.full((200, 3, 4, 4), 0.5)
    values = augment.gamma_and_noise(grey, torch.Generator().manual_seed(0)).mean((1, 2, 3))
    low, high = 0.5 ** augment.GAMMA_RANGE[1], 0.5 ** augment.GAMMA_RANGE[0]
    assert values.min() > low - 0.01 and values.max() < high + 0.01 and values.min() < 0.45 and values.max() > 0.55


def test_the_stream_gives_the_same_batches_for_the_same_seed_and_refuses_a_too_large_batch():
    images, masks = torch.randint(0, 256, (5, 3, 12, 16), dtype=torch.uint8), torch.randint(0, 11, (5, 12, 16), dtype=torch.uint8)
    first, second = (list(augment.AugmentedStream(images, masks, 3, 2, (8, 8), (0.5, 2.0), 11, "strong").epoch()) for _ in range(2))
    assert len(first) == 2 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second))
    with pytest.raises(ValueError, match="larger than the 5 training frames"):
        augment.AugmentedStream(images, masks, 0, 6, (8, 8), (1, 1), 11)
