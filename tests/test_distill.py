"""Distillation (train/distill.py): alpha=0 == plain training, the teacher is frozen, teacher sources."""

import pytest
import torch

import resmlp
from resmlp.checkpoint import read_checkpoint
from resmlp.config import ConfigError, load_config
from resmlp.models import Preprocess
from resmlp.train.distill import BatchAdapter, DistillationCriterion, check_native_sizes, load_teacher
from resmlp.train.run import train


def test_bad_settings_are_named():
    teacher = torch.nn.Linear(3, 3)
    pre = Preprocess(img_size=8)
    with pytest.raises(ValueError, match="distill.kind='medium'"):
        DistillationCriterion(
            teacher, BatchAdapter(pre, pre), kind="medium", alpha=0.5, tau=1, device=torch.device("cpu")
        )
    with pytest.raises(ValueError, match="distill.alpha=1.5"):
        DistillationCriterion(
            teacher, BatchAdapter(pre, pre), kind="hard", alpha=1.5, tau=1, device=torch.device("cpu")
        )
    with pytest.raises(ValueError, match="does not exist"):
        load_teacher("/nonexistent/teacher.pt")


def test_teacher_is_frozen_in_eval_mode_and_never_updated():
    torch.manual_seed(0)
    teacher = resmlp.create_model("resnet20_cifar", img_size=8).train()  # BatchNorm: would update stats in train mode
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    for p in teacher.parameters():
        p.requires_grad_(False)
    pre = Preprocess(img_size=8)
    crit = DistillationCriterion(
        teacher, BatchAdapter(pre, pre), kind="soft", alpha=0.5, tau=2.0, device=torch.device("cpu")
    )
    student = resmlp.create_model("resmlp_micro8")
    x = torch.randn(4, 3, 8, 8)
    loss = crit(x, student(x), torch.full((4, 10), 0.1))
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert crit.teacher_time_s > 0 and not teacher.training


def test_batch_adapter_renormalises_and_resizes():
    s = Preprocess(img_size=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    t = Preprocess(img_size=16, mean=(0.4, 0.5, 0.6), std=(0.2, 0.5, 1.0))
    raw = torch.rand(2, 3, 8, 8)
    x_student = (raw - 0.5) / 0.25
    out = BatchAdapter(s, t)(x_student)
    assert out.shape == (2, 3, 16, 16)
    expected = torch.nn.functional.interpolate(
        (raw - torch.tensor(t.mean).view(1, 3, 1, 1)) / torch.tensor(t.std).view(1, 3, 1, 1), size=16, mode="bicubic"
    )
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert BatchAdapter(s, s).identity and BatchAdapter(s, None).identity


def test_batch_adapter_without_resize_keeps_each_batch_size():
    s = Preprocess(img_size=8, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    t = Preprocess(img_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    for size in (6, 8):  # a progressive run's batches
        x = torch.randn(2, 3, size, size)
        torch.testing.assert_close(BatchAdapter(s, t, resize=False)(x), x * 0.5)


def test_a_native_teacher_view_refuses_a_teacher_made_for_one_size():
    check_native_sizes(resmlp.create_model("convnet_cifar"), [(24, 24), (16, 32)], "t")  # any size
    with pytest.raises(ConfigError, match=r"teacher_view=native: the teacher t.pt cannot take the student's 6x6 "):
        check_native_sizes(resmlp.create_model("resmlp_micro8"), [(6, 6)], "t.pt")
    check_native_sizes(resmlp.create_model("resmlp_micro8"), [], "t.pt")  # no other size: nothing to check


@pytest.mark.parametrize(
    "override, key", [("data.batch_augment=false", "data.batch_augment"), ("data.mixup_alpha=0.8", "data.mixup_alpha")]
)
def test_the_full_teacher_view_needs_batch_augmentation_without_mixing(override, key):
    common = ["distill.teacher=t", "distill.teacher_view=full", "data.cutmix_alpha=0"]  # the recipe mixes
    assert load_config("cifar10_cpu", common).distill.teacher_view == "full"
    with pytest.raises(ConfigError, match=f"distill.teacher_view=full: .*{key}"):
        load_config("cifar10_cpu", common + [override])
    alone = load_config("cifar10_cpu", ["distill.teacher=none", "distill.teacher_view=full", override])
    assert not alone.distill.active  # no teacher: the view is unused


def test_torchscript_teacher_loads(tmp_path):
    torch.manual_seed(0)
    net = resmlp.create_model("resnet20_cifar", img_size=8).eval()
    torch.jit.script(net).save(str(tmp_path / "teacher.ts"))
    teacher, pre, ident = load_teacher(str(tmp_path / "teacher.ts"))
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(teacher(x), net(x))
    assert pre is None and ident["kind"] == "torchscript" and len(ident["sha256"]) == 64


def test_teacher_tta_flip_averages_the_teachers_logits_over_the_mirror(tmp_path):
    from resmlp.config import DistillConfig
    from resmlp.train.distill import build_distillation

    torch.manual_seed(0)
    net = resmlp.create_model("resnet20_cifar", img_size=8).eval()
    torch.jit.script(net).save(str(tmp_path / "teacher.ts"))
    x = torch.randn(3, 3, 8, 8)
    crits = {
        tta: build_distillation(
            DistillConfig(teacher=str(tmp_path / "teacher.ts"), teacher_tta=tta),
            device=torch.device("cpu"),
            student_preprocess=Preprocess(img_size=8),
            classes=[str(i) for i in range(10)],
        )
        for tta in ("none", "flip")
    }
    with torch.no_grad():
        plain, mirrored = net(x), net(x.flip(-1))
    torch.testing.assert_close(crits["none"].teacher_logits(x), plain)
    torch.testing.assert_close(crits["flip"].teacher_logits(x), (plain + mirrored) / 2)
    assert not torch.allclose(plain, mirrored)  # the mirror is a different view: the test can fail
    with pytest.raises(ConfigError, match="distill.teacher_tta"):
        load_config("digits", ["distill.teacher_tta=rotate"])


TINY = [
    "model.embed_dim=16",
    "model.depth=1",
    "data.batch_size=64",
    "data.workers=0",
    "optim.epochs=1",
    "run.progress=false",
    "run.tensorboard=false",
]


def test_distilled_runs_record_the_teacher_and_alpha_zero_matches_plain(tmp_path):
    teacher_run = tmp_path / "teacher"
    no_overrides = [x for x in TINY if not x.startswith(("model.embed_dim", "model.depth"))]
    train(
        load_config(
            "digits",
            no_overrides
            + [
                "model.name=resnet20_cifar",
                "model.blocks_per_stage=1",
                "model.img_size=8",
                "optim.name=sgd",
                "optim.lr=0.4",
            ],
        ),
        out=teacher_run,
    )
    plain = train(load_config("digits", TINY), out=tmp_path / "plain")
    zero = train(
        load_config("digits", TINY + [f"distill.teacher={teacher_run}", "distill.alpha=0"]), out=tmp_path / "zero"
    )
    a = read_checkpoint(tmp_path / "plain" / "checkpoints" / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "zero" / "checkpoints" / "last.pt")
    for k in a:
        assert torch.equal(a[k], b["model"][k]), k
    ident = b["teacher"]
    t_ckpt = read_checkpoint(teacher_run / "checkpoints" / "best.pt")
    assert ident["model"] == "resnet20_cifar" and ident["val_top1"] == t_ckpt["best_val_top1"]
    assert len(ident["sha256"]) == 64 and ident["path"].endswith("best.pt")
    assert zero["teacher"] == ident and plain["teacher"] is None

    hard = train(
        load_config(
            "digits", TINY + [f"distill.teacher={teacher_run}", "distill.kind=hard", "distill.teacher_precision=bf16"]
        ),
        out=tmp_path / "hard",
    )
    c = read_checkpoint(tmp_path / "hard" / "checkpoints" / "last.pt")["model"]
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the teacher term changes training
    assert hard["final_val_top1"] is not None
    import json

    row = json.loads((tmp_path / "hard" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["teacher_time_s"] > 0


def test_the_teacher_runs_in_bf16_when_the_student_does_unless_told():
    from resmlp.train.distill import teacher_precision

    assert teacher_precision("auto", "bf16") == "bf16"
    assert teacher_precision("auto", "fp32") == "fp32" and teacher_precision("auto", "fp16") == "fp32"
    assert teacher_precision("fp32", "bf16") == "fp32" and teacher_precision("bf16", "fp32") == "bf16"


@pytest.mark.openvino
def test_an_openvino_teacher_gives_the_eager_teachers_logits(tmp_path):
    """`distill.teacher_runtime=openvino`: the teacher's forward pass compiled by OpenVINO, float32 logits equal
    to PyTorch's up to rounding (the flip views included); the views it cannot take are refused by the config."""
    from resmlp.config import DistillConfig
    from resmlp.train.distill import build_distillation

    torch.manual_seed(0)
    net = resmlp.create_model("resmlp_micro8").eval()
    torch.save(net.state_dict(), tmp_path / "teacher.pt")
    x = torch.randn(5, 3, 8, 8)
    crits = {
        runtime: build_distillation(
            DistillConfig(
                teacher=str(tmp_path / "teacher.pt"),
                teacher_model="resmlp_micro8",
                teacher_runtime=runtime,
                teacher_precision="fp32",
                teacher_tta="flip",
            ),
            device=torch.device("cpu"),
            student_preprocess=Preprocess(img_size=8),
            classes=[str(i) for i in range(10)],
        )
        for runtime in ("eager", "openvino")
    }
    eager, compiled = crits["eager"].teacher_logits(x), crits["openvino"].teacher_logits(x)
    assert "openvino" in repr(crits["openvino"].teacher) and "openvino" not in repr(crits["eager"].teacher)
    assert compiled.dtype == torch.float32 and compiled.shape == (5, 10)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="distill.teacher_runtime=openvino .* distill.teacher_view=resize or full"):
        load_config("cifar10_cpu", ["distill.teacher_runtime=openvino"])  # the recipe's view is native
    with pytest.raises(ConfigError, match="distill.teacher_runtime"):
        load_config("digits", ["distill.teacher_runtime=onnx"])
