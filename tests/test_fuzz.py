"""Property-based fuzzing (hypothesis) of what users hand us from elsewhere: image files, checkpoints and
weights files, YAML configs and `--set` overrides. Every input must end in a valid result or in our own
error type (which the CLI prints as one `error:` line) -- never another exception, a hang or a crash.

RESMLP_FUZZ_EXAMPLES sets the examples per target (default 200; e.g. 5000 for a long session).
"""

import dataclasses
import io
import os
import struct
import tempfile
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from resmlp.checkpoint import model_record, read_checkpoint  # noqa: E402
from resmlp.config import ConfigError, TrainConfig, load_config  # noqa: E402
from resmlp.data.datasets import ImageDataset  # noqa: E402
from resmlp.data.images import BadImageError, load_rgb  # noqa: E402
from resmlp.loading import load_model  # noqa: E402
from resmlp.models import create_model  # noqa: E402
from resmlp.weights import WeightsError, read_state_dict  # noqa: E402

EXAMPLES = int(os.environ.get("RESMLP_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _scratch(data: bytes, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(name)


def mutate(seed_bytes: bytes):
    """Valid bytes with random damage: bit flips, overwritten runs, a cut, an insertion."""

    @st.composite
    def strategy(draw):
        data = bytearray(seed_bytes)
        for _ in range(draw(st.integers(1, 8))):
            kind = draw(st.sampled_from(["flip", "run", "cut", "insert"]))
            pos = draw(st.integers(0, max(0, len(data) - 1)))
            if kind == "flip" and data:
                data[pos] ^= 1 << draw(st.integers(0, 7))
            elif kind == "run":
                chunk = draw(st.binary(min_size=1, max_size=16))
                data[pos : pos + len(chunk)] = chunk
            elif kind == "cut":
                data = data[:pos]
            else:
                data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        return bytes(data)

    return strategy()


# ------------------------------------------------------------------------------------------- images


def _image_bytes(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


IMAGES = {fmt: _image_bytes(fmt) for fmt in ("PNG", "JPEG", "WEBP", "BMP", "GIF")}
image_inputs = st.one_of(st.binary(max_size=2048), *[mutate(b) for b in IMAGES.values()])


@FUZZ
@given(data=image_inputs, suffix=st.sampled_from([".png", ".jpg", ".webp", ".bmp", ".gif"]))
def test_image_loader_decodes_or_reports_a_bad_image(data, suffix):
    path = _scratch(data, suffix)
    try:
        loader = lambda p: load_rgb(p, max_pixels=1_000_000)  # a mutated header may claim a huge size
        ds = ImageDataset([(path, 0)], loader=loader, on_bad="fail")
        try:
            image, label = ds.load(0)
        except BadImageError as e:
            assert str(path) in str(e)
            event("BadImageError")
        else:
            event("decoded")
            assert image.mode == "RGB" and image.width * image.height <= 1_000_000 and label == 0
    finally:
        path.unlink()


# ------------------------------------------------------------------------------------------- checkpoints


def _checkpoint_bytes() -> bytes:
    model = create_model("resmlp_micro8", embed_dim=8, depth=1, num_classes=3)
    buf = io.BytesIO()
    torch.save({**model_record(model), "epoch": 1}, buf)
    return buf.getvalue()


def _safetensors_bytes() -> bytes:
    from safetensors.torch import save

    return save({"stem.proj.weight": torch.ones(4, 3, 2, 2), "head.bias": torch.zeros(3)})


CKPT, SAFE = _checkpoint_bytes(), _safetensors_bytes()


@st.composite
def lying_safetensors(draw):
    """A safetensors file whose JSON header claims shapes, dtypes and offsets of its choosing."""
    header = {
        "t": {
            "dtype": draw(st.sampled_from(["F32", "F16", "I64", "BOOL", "XX"])),
            "shape": draw(st.lists(st.integers(-2, 2**40), max_size=4)),
            "data_offsets": draw(st.lists(st.integers(-2, 2**40), min_size=0, max_size=3)),
        }
    }
    raw = (
        yaml.safe_dump(header, default_flow_style=True).encode()
        if draw(st.booleans())
        else __import__("json").dumps(header).encode()
    )
    size = draw(st.one_of(st.just(len(raw)), st.integers(0, 2**64 - 1)))
    return struct.pack("<Q", size) + raw + draw(st.binary(max_size=64))


@FUZZ
@given(data=st.one_of(st.binary(max_size=4096), mutate(CKPT)))
def test_checkpoint_reader_reads_or_reports_a_bad_file(data):
    path = _scratch(data, ".pt")
    try:
        try:
            ckpt = read_checkpoint(path)
        except WeightsError as e:
            assert str(path) in str(e) and "weights_only=False" not in str(e)
            event("WeightsError on read")
        else:
            assert ckpt["format"] == "resmlp-checkpoint"
            try:  # what a damaged-but-readable checkpoint does to the one loader
                load_model(path)
                event("read and loaded")
            except ValueError as e:  # WeightsError / ConfigError: printed as one `error:` line by the CLI
                event(f"read, then {type(e).__name__} on load")
    finally:
        path.unlink()


@FUZZ
@given(data=st.one_of(mutate(SAFE), lying_safetensors()))
def test_safetensors_reader_reads_or_reports_a_bad_file(data):
    path = _scratch(data, ".safetensors")
    try:
        try:
            sd = read_state_dict(path)
        except WeightsError as e:
            assert str(path) in str(e)
            event("WeightsError")
        else:
            event("read")
            assert all(isinstance(v, torch.Tensor) for v in sd.values())
    finally:
        path.unlink()


# ------------------------------------------------------------------------------------------- configs

SECTIONS = {name: [g.name for g in dataclasses.fields(tp)] for name, tp in typing.get_type_hints(TrainConfig).items()}
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=12,
)


@st.composite
def config_mappings(draw):
    """Mostly-valid keys (so the fuzzing reaches the type checks) with values of any type."""
    out = {}
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "base", "bogus", 3]), max_size=4, unique=True)):
        if section in SECTIONS and draw(st.booleans()):
            keys = draw(st.lists(st.sampled_from(SECTIONS[section] + ["nope"]), max_size=4, unique=True))
            out[section] = {k: draw(values) for k in keys}
        else:
            out[section] = draw(values)
    return out


yaml_texts = st.one_of(
    st.text(max_size=300),
    config_mappings().map(lambda m: yaml.safe_dump(m, allow_unicode=True)),
    st.just("a: &x [1, 2]\nb: *x\n"),  # aliases
    st.integers(1, 300).map(lambda n: "[" * n + "]" * n),  # deep nesting
)


@FUZZ
@given(text=yaml_texts)
def test_config_loader_builds_a_config_or_names_the_problem(text):
    path = _scratch(text.encode("utf-8", errors="surrogatepass"), ".yaml")
    try:
        try:
            cfg = load_config(str(path))
        except ConfigError:
            event("ConfigError")
        else:
            event("valid config")
            assert isinstance(cfg, TrainConfig)
    finally:
        path.unlink()


@FUZZ
@given(
    items=st.lists(
        st.one_of(
            st.text(max_size=40),
            st.tuples(
                st.sampled_from([f"{s}.{k}" for s, ks in SECTIONS.items() for k in ks]), st.text(max_size=10)
            ).map(lambda kv: f"{kv[0]}={kv[1]}"),
        ),
        max_size=4,
    )
)
def test_set_overrides_build_a_config_or_name_the_problem(items):
    try:
        cfg = load_config(None, items)
    except ConfigError:
        event("ConfigError")
    else:
        event("valid config")
        assert isinstance(cfg, TrainConfig)
