"""Distillation: the loss by hand, alpha=0 == plain training, the teacher is frozen, teacher sources."""
import math

import pytest
import torch

import resmlp
from resmlp.checkpoint import read_checkpoint
from resmlp.distill import BatchAdapter, DistillationCriterion, distillation_loss, load_teacher
from resmlp.models import Preprocess
from resmlp.train.config import load_config
from resmlp.train.run import train

S = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])  # student logits
T = torch.tensor([[0.0, 3.0, 0.0], [1.0, 0.0, 2.0]])  # teacher logits: argmax 1 and 2
Y = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05]])  # smoothed targets


def log_softmax(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def hand_ce(rows, targets):
    return sum(-sum(t * l for t, l in zip(ts, log_softmax(r))) for r, ts in zip(rows, targets)) / len(rows)


def test_hard_distillation_by_hand():
    s, y = S.tolist(), Y.tolist()
    base = hand_ce(s, y)
    hard = (-log_softmax(s[0])[1] - log_softmax(s[1])[2]) / 2
    got = distillation_loss(S, Y, T, kind="hard", alpha=0.5, tau=1.0)
    assert got.item() == pytest.approx(0.5 * base + 0.5 * hard, rel=1e-6)
    assert got.item() == pytest.approx(1.2859, abs=2e-4)  # worked out on paper: base 0.5047, hard 2.0672


def test_soft_distillation_by_hand():
    tau, s, t, y = 2.0, S.tolist(), T.tolist(), Y.tolist()
    kl = 0.0
    for sr, tr in zip(s, t):
        ls, lt = log_softmax([v / tau for v in sr]), log_softmax([v / tau for v in tr])
        kl += sum(math.exp(b) * (b - a) for a, b in zip(ls, lt))
    kl /= 2
    expected = 0.3 * hand_ce(s, y) + 0.7 * kl * tau * tau
    assert distillation_loss(S, Y, T, kind="soft", alpha=0.7, tau=tau).item() == pytest.approx(expected, rel=1e-6)
    assert distillation_loss(S, Y, S, kind="soft", alpha=1.0, tau=tau).item() == pytest.approx(0.0, abs=1e-6)


def test_alpha_zero_is_the_plain_loss():
    plain = distillation_loss(S, Y, T, kind="hard", alpha=0.0, tau=1.0)
    torch.testing.assert_close(plain, resmlp.train.engine.soft_target_cross_entropy(S, Y))


def test_bad_settings_are_named():
    teacher = torch.nn.Linear(3, 3)
    pre = Preprocess(img_size=8)
    with pytest.raises(ValueError, match="distill.kind='medium'"):
        DistillationCriterion(teacher, BatchAdapter(pre, pre), kind="medium", alpha=0.5, tau=1, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="distill.alpha=1.5"):
        DistillationCriterion(teacher, BatchAdapter(pre, pre), kind="hard", alpha=1.5, tau=1, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="does not exist"):
        load_teacher("/nonexistent/teacher.pt")


def test_teacher_is_frozen_in_eval_mode_and_never_updated():
    torch.manual_seed(0)
    teacher = resmlp.create_model("resnet20_cifar", img_size=8).train()  # BatchNorm: would update stats in train mode
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    for p in teacher.parameters():
        p.requires_grad_(False)
    pre = Preprocess(img_size=8)
    crit = DistillationCriterion(teacher, BatchAdapter(pre, pre), kind="soft", alpha=0.5, tau=2.0,
                                 device=torch.device("cpu"))
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
    expected = torch.nn.functional.interpolate((raw - torch.tensor(t.mean).view(1, 3, 1, 1)) /
                                               torch.tensor(t.std).view(1, 3, 1, 1), size=16, mode="bicubic")
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert BatchAdapter(s, s).identity and BatchAdapter(s, None).identity


def test_torchscript_teacher_loads(tmp_path):
    torch.manual_seed(0)
    net = resmlp.create_model("resnet20_cifar", img_size=8).eval()
    torch.jit.script(net).save(str(tmp_path / "teacher.ts"))
    teacher, pre, ident = load_teacher(str(tmp_path / "teacher.ts"))
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(teacher(x), net(x))
    assert pre is None and ident["kind"] == "torchscript" and len(ident["sha256"]) == 64


TINY = ["model.overrides={embed_dim: 16, depth: 1}", "data.batch_size=64", "data.workers=0", "optim.epochs=1",
        "run.progress=false", "run.tensorboard=false"]


def test_distilled_runs_record_the_teacher_and_alpha_zero_matches_plain(tmp_path):
    teacher_run = tmp_path / "teacher"
    no_overrides = [x for x in TINY if not x.startswith("model.overrides")]
    train(load_config("digits", no_overrides + ["model.name=resnet20_cifar", "model.overrides={blocks_per_stage: 1}",
                                                "data.img_size=8", "optim.name=sgd", "optim.lr=0.4"]), out=teacher_run)
    plain = train(load_config("digits", TINY), out=tmp_path / "plain")
    zero = train(load_config("digits", TINY + [f"distill.teacher={teacher_run}", "distill.alpha=0"]),
                 out=tmp_path / "zero")
    a = read_checkpoint(tmp_path / "plain" / "checkpoints" / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "zero" / "checkpoints" / "last.pt")
    for k in a:
        assert torch.equal(a[k], b["model"][k]), k
    ident = b["teacher"]
    t_ckpt = read_checkpoint(teacher_run / "checkpoints" / "best.pt")
    assert ident["model"] == "resnet20_cifar" and ident["val_top1"] == t_ckpt["best_val_top1"]
    assert len(ident["sha256"]) == 64 and ident["path"].endswith("best.pt")
    assert zero["teacher"] == ident and plain["teacher"] is None

    hard = train(load_config("digits", TINY + [f"distill.teacher={teacher_run}", "distill.kind=hard",
                                               "distill.teacher_bf16=true"]), out=tmp_path / "hard")
    c = read_checkpoint(tmp_path / "hard" / "checkpoints" / "last.pt")["model"]
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the teacher term changes training
    assert hard["final_val_top1"] is not None
    import json

    row = json.loads((tmp_path / "hard" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["teacher_time_s"] > 0
