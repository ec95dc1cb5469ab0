"""The embedder: preprocessing, unit-length deterministic embeddings, near-duplicates closer than
other images, and optimised variants matching the eager reference.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from processors.model import (
    EMBEDDING_DIM,
    MODEL_ID,
    PREPROCESS_TAG,
    Embedder,
    fold_lite0,
    preprocess,
    to_batch,
)
from streams.errors import ConfigError
from streams.workload.images import augment, available_photos, load_photo


@pytest.fixture(scope="module")
def eager() -> Iterator[Embedder]:
    threads = torch.get_num_threads()
    yield Embedder("eager")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    names = available_photos()
    # scikit-image is installed by the test command (the gen extra): missing photos are a failure.
    assert len(names) >= 4, "scikit-image's bundled sample photos are missing: pip install -e '.[gen]'"
    return [load_photo(name) for name in names[:6]]


def test_preprocess_shape_and_normalisation() -> None:
    for value, expected in ((127, 0.0), (255, 1.0), (0, -127 / 128)):
        out = preprocess(Image.new("RGB", (300, 400), (value, value, value)))
        assert out.shape == (224, 224, 3) and out.dtype == np.float32
        assert np.allclose(out, expected, atol=1e-6)


def test_preprocess_keeps_the_centre() -> None:
    # 512x256: the shorter side is already 256, so the centre 224 columns are x = 144..368.
    image = Image.new("RGB", (512, 256), (255, 0, 0))
    image.paste((0, 0, 255), (120, 0, 392, 256))
    out = preprocess(image)
    assert np.allclose(out[..., 2], 1.0, atol=0.02) and np.allclose(out[..., 0], -127 / 128, atol=0.02)


def test_to_batch_is_nchw_without_copying_into_another_layout() -> None:
    arrays = [preprocess(Image.new("RGB", (256, 256), (i * 40, 0, 0))) for i in range(3)]
    batch = to_batch(arrays)
    assert batch.shape == (3, 3, 224, 224)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(batch[1, 0], torch.from_numpy(arrays[1][..., 0]))


def test_embeddings_are_unit_length_deterministic_and_batch_independent(
        eager: Embedder, photos: list[Image.Image]) -> None:
    first = eager.embed(photos)
    again = eager.embed(photos)
    single = eager.embed(photos[:1])
    assert first.shape == (len(photos), EMBEDDING_DIM) and first.dtype == np.float32
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(first, again)
    assert float(single[0] @ first[0]) > 1 - 1e-5
    assert eager.embed([]).shape == (0, EMBEDDING_DIM)


def test_an_augmented_copy_is_closer_to_its_original_than_to_other_images(
        eager: Embedder, photos: list[Image.Image]) -> None:
    rng = np.random.default_rng(3)
    originals = eager.embed(photos)
    copies = eager.embed([augment(photo, rng) for photo in photos])
    similarity = copies @ originals.T
    assert list(similarity.argmax(axis=1)) == list(range(len(photos)))
    assert float(np.diag(similarity).min()) > 0.6


@pytest.mark.parametrize("variant", ["channels_last", "fused", "jit"])
def test_optimised_variants_match_eager(variant: str, eager: Embedder,
                                        photos: list[Image.Image]) -> None:
    optimised = Embedder(variant)
    cosine = (optimised.embed(photos) * eager.embed(photos)).sum(axis=1)
    assert float(cosine.min()) > 1 - 1e-4
    assert optimised.model_version == eager.model_version  # same function, same vectors
    # A different batch size must not change the traced graph's answer.
    assert float(optimised.embed(photos[:1])[0] @ eager.embed(photos[:1])[0]) > 1 - 1e-4


def test_folded_network_matches_library_network_on_random_input(eager: Embedder) -> None:
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        reference = eager.reference(x)
        folded = fold_lite0(eager.network)(x)
    assert torch.allclose(reference, folded, rtol=1e-3, atol=1e-3)


def test_model_identity(eager: Embedder) -> None:
    assert eager.model_id == MODEL_ID
    weights, rest = eager.model_version.split("-", 1)
    assert len(weights) == 12 and int(weights, 16) >= 0
    assert rest == f"{PREPROCESS_TAG}-fp32"
    untrained = Embedder("eager", pretrained=False, seed=5)
    assert untrained.model_version.startswith("random5-")


def test_unknown_variant_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Embedder("turbo")



def test_from_settings_warms_up_every_batch_size() -> None:
    from streams.settings import Settings

    threads = torch.get_num_threads()
    try:
        embedder = Embedder.from_settings(Settings(embed_optimisation="fused", embed_max_batch=3,
                                                   embed_threads=1))
        assert embedder.optimisation == "fused" and torch.get_num_threads() == 1
        assert embedder.warm_up(1) >= 0.0
    finally:
        torch.set_num_threads(threads)  # a process-wide setting: leave it as other tests found it
