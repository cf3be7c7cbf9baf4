"""device.py: which precision "auto" picks on a CPU; keeping freed CPU memory in the process
(run.retain_cpu_memory); conv nets placed in NHWC layout."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import resmlp
from resmlp import device as device_module
from resmlp.device import auto_precision, glibc_mallopt, native_bf16, place, retain_freed_cpu_memory

# Eight 16 MiB tensors alive at once and then freed, four times: a training step's activations in miniature.
# Each round's minor page faults are counted in a fresh interpreter, so this test's own heap is not touched.
ROUNDS = """
import json, resource, sys, torch
from resmlp.device import retain_freed_cpu_memory
applied = retain_freed_cpu_memory(retain=sys.argv[1] == "retain")
def round_faults():
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    xs = [torch.ones(4 * 2**20) for _ in range(8)]
    del xs
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
print(json.dumps({"applied": applied, "faults": [round_faults() for _ in range(4)]}))
"""


def faults_per_round(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(glibc_mallopt() is None, reason="needs Linux with glibc (mallopt)")
def test_retained_memory_is_not_faulted_in_again():
    plain, retained = faults_per_round("release"), faults_per_round("retain")
    assert plain["applied"] is retained["applied"] is True
    pages = 8 * 16 * 2**20 // 4096
    # At glibc's start-up thresholds (held fixed here: glibc as it starts raises them after a round or two, by a
    # heuristic whose timing varied between runs), the freed 128 MiB go back and are faulted in every round ...
    assert min(plain["faults"]) > pages // 2
    # ... kept, only the first round touches fresh pages (a host whose kernel reclaims idle memory in the background,
    # e.g. DAMON's kdamond, may take some back once: two of the three later rounds must fault almost nothing).
    assert retained["faults"][0] > pages // 2
    assert sum(faults < pages // 8 for faults in retained["faults"][1:]) >= 2, retained["faults"]


def test_off_linux_nothing_changes(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert retain_freed_cpu_memory() is False


@pytest.mark.parametrize(
    "flags,expected",
    [
        ({"AuthenticAMD", "avx2", "fma"}, "fp32"),  # bf16 emulated: 24x slower
        ({"GenuineIntel", "avx512f", "avx512_bf16", "avx512_fp16"}, "fp32"),  # AVX512-BF16 without AMX: 0.77x fp32
        ({"GenuineIntel", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, "bf16"),
        ({"AuthenticAMD", "avx512f", "avx512_bf16"}, "bf16"),  # an EPYC with AVX512-BF16 (Zen 5): 2.0x fp32
    ],
)
def test_auto_precision_is_bf16_with_amx_or_amd_avx512_bf16_on_a_cpu(monkeypatch, flags, expected):
    monkeypatch.setattr(device_module, "cpu_flags", lambda: frozenset(flags))
    assert native_bf16("cpu") == (expected == "bf16")
    assert auto_precision("auto", "cpu") == expected
    assert auto_precision("fp32", "cpu") == "fp32" and auto_precision("bf16", "cpu") == "bf16"  # as asked


@pytest.mark.parametrize("name", ["convnet_cifar", "resnet20_cifar"])
def test_conv_nets_are_placed_channels_last_with_the_same_outputs(name):
    torch.manual_seed(0)
    model = resmlp.create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    place(model, "cpu")
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not any(w.is_contiguous() for w in convs if w.shape[-1] > 1)  # (1 x 1 kernels are both at once)
    torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)


def test_patch_models_keep_their_layout():
    model = place(resmlp.create_model("resmlp_micro8"), "cpu")
    assert model.stem.proj.weight.is_contiguous()


def test_compile_needs_a_cpu_compiler_and_names_the_one_it_looked_for(monkeypatch):
    from torch._inductor import config

    device_module.compile_unavailable.cache_clear()
    monkeypatch.setattr(config.cpp, "cxx", (None, "/nonexistent/g++"))
    try:
        missing = device_module.compile_unavailable("cpu")
        assert missing is not None and "/nonexistent/g++" in missing and "C++ compiler" in missing
        # Any program answering `--version` is what Inductor takes for a compiler: found, nothing is missing.
        device_module.compile_unavailable.cache_clear()
        monkeypatch.setattr(config.cpp, "cxx", (sys.executable,))
        assert device_module.compile_unavailable("cpu") is None
    finally:
        device_module.compile_unavailable.cache_clear()


def test_run_compile_auto_falls_back_to_eager_and_true_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(device_module, "compile_unavailable", lambda kind: "no C++ compiler (g++)")
    assert device_module.resolve_compile(False, "cpu") == (False, None)
    assert device_module.resolve_compile("auto", "cpu") == (False, "no C++ compiler (g++)")
    with pytest.raises(ValueError, match=r"run\.compile=true: no C\+\+ compiler \(g\+\+\); or set run\.compile=auto"):
        device_module.resolve_compile(True, "cpu")
    monkeypatch.setattr(device_module, "compile_unavailable", lambda kind: None)
    assert device_module.resolve_compile("auto", "cpu") == device_module.resolve_compile(True, "cpu") == (True, None)
