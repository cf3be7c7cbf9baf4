"""The loop's two functions: `train_one_epoch` fits what it is shown, `evaluate` counts what it should."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import resmlp
from resmlp.data.batch_augment import BatchAugment
from resmlp.optim import CosineWarmupSchedule, build_optimizer
from resmlp.train.engine import (
    EpochCarry,
    EvalStats,
    NonFiniteLossError,
    StepContext,
    TrainStats,
    evaluate,
    train_one_epoch,
)


def _context(model: nn.Module, lr: float = 1e-2, accum_steps: int = 1) -> StepContext:
    opt = build_optimizer(model, name="adamw", lr=lr, weight_decay=0.0)
    schedule = CosineWarmupSchedule(opt, total_steps=10_000, warmup_steps=0, min_lr=lr)  # ~constant lr
    return StepContext(
        model=model,
        optimizer=opt,
        schedule=schedule,
        device=torch.device("cpu"),
        criterion=lambda images, logits, targets: F.cross_entropy(logits, targets),
        accum_steps=accum_steps,
    )


def test_train_one_epoch_overfits_one_repeated_batch():
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_micro8", embed_dim=16, depth=1)
    images, labels = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    before = evaluate(model, [(images, labels)], torch.device("cpu"), num_classes=10)
    stats = train_one_epoch(_context(model), [(images, labels)] * 60, epoch=0, progress=False)
    after = evaluate(model, [(images, labels)], torch.device("cpu"), num_classes=10)
    assert isinstance(stats, TrainStats) and stats.steps == 60 and stats.images_per_s > 0
    assert before.loss > 1.5 and after.loss < before.loss / 20 and after.top1 == 100.0
    assert stats.train_loss < before.loss  # the epoch's mean, over a falling loss


def test_accumulation_steps_the_optimizer_every_k_batches_and_max_steps_stops():
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_micro8", embed_dim=16, depth=1)
    batch = (torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,)))
    ctx = _context(model, accum_steps=3)
    assert train_one_epoch(ctx, [batch] * 7, epoch=0, progress=False).steps == 2
    assert ctx.schedule.last_step == 2
    assert train_one_epoch(_context(model), [batch] * 7, epoch=0, progress=False, max_steps=4).steps == 4
    ctx = _context(model)  # resumed at the end of an epoch cut at 4 steps (a plan's partial last epoch)
    done = train_one_epoch(ctx, [batch] * 3, epoch=0, progress=False, max_steps=4, carry=EpochCarry(4, 8.0, 16))
    assert done.steps == 4 and ctx.schedule.last_step == 0 and done.train_loss == 0.5  # no step taken


class _Oracle(nn.Module):
    """Logits from the label the 'image' is: the top one at label + shift, the true class second."""

    def __init__(self, num_classes: int, shift: int = 0) -> None:
        super().__init__()
        self.num_classes, self.shift = num_classes, shift

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        top = F.one_hot((labels + self.shift) % self.num_classes, self.num_classes)
        return 20.0 * top.float() + 10.0 * F.one_hot(labels, self.num_classes).float()


@pytest.mark.parametrize("shift", [0, 1])
def test_evaluate_counts_hits_and_the_confusion_matrix(shift):
    labels = torch.arange(7).repeat(3)  # 21 images, 3 per class
    loader = [(labels[:10], labels[:10]), (labels[10:], labels[10:])]  # the oracle reads the label as its image
    res = evaluate(_Oracle(7, shift), loader, torch.device("cpu"), num_classes=7)
    assert isinstance(res, EvalStats) and res.count == 21
    expected = 3 * torch.roll(torch.eye(7, dtype=torch.long), shifts=shift, dims=1)  # rows = true class
    torch.testing.assert_close(res.confusion, expected)
    if shift == 0:
        assert (res.top1, res.top5) == (100.0, 100.0) and res.loss < 1e-6
    else:
        assert (res.top1, res.top5) == (0.0, 100.0) and res.loss > 5


@pytest.mark.parametrize("full", [False, True])
def test_the_criterion_gets_the_full_view_when_the_teacher_sees_it(full):
    """With batch augmentation cutting 6 x 6 windows of 8 x 8 images, the model trains on the windows and the
    criterion (whose images only a teacher sees) gets the windows or, with `teacher_sees_full`, the full crops
    they were cut from."""
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_micro8", embed_dim=16, depth=1, img_size=6, patch_size=2)
    seen = []

    def criterion(images, logits, targets):
        seen.append((tuple(images.shape[-2:]), tuple(logits.shape)))
        return F.cross_entropy(logits, targets)

    ctx = _context(model)
    ctx.criterion, ctx.teacher_sees_full = criterion, full
    ctx.augment = BatchAugment(mean=(0.5,) * 3, std=(0.25,) * 3, padding=1).with_output_size(6, "crop")
    uint8 = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    train_one_epoch(ctx, [(uint8, torch.randint(0, 10, (4,)))] * 2, epoch=0, progress=False)
    assert seen == [((8, 8) if full else (6, 6), (4, 10))] * 2


def test_lookahead_pulls_the_weights_to_their_average_then_hands_it_over_at_the_end():
    from resmlp.train.engine import Lookahead

    model = nn.Linear(2, 1, bias=False)
    nn.init.zeros_(model.weight)
    la = Lookahead(model, every=5, base_decay=0.5)
    assert la.decay_at(3, 10) is None and la.decay_at(5, 10) == pytest.approx(0.5 * 0.5**3)
    assert la.decay_at(10, 10) == 1.0 and la.decay_at(0, 10) == 0.0
    with torch.no_grad():
        model.weight.fill_(1.0)
    la.update(model, step=3, total=10)  # not a lookahead step: nothing moves
    assert model.weight.eq(1.0).all() and la.module.weight.eq(0.0).all()
    la.update(model, step=5, total=10)  # slow = d * slow + (1 - d) * fast; fast = slow
    expected = 1.0 - 0.5 * 0.5**3
    torch.testing.assert_close(la.module.weight, torch.full((1, 2), expected))
    torch.testing.assert_close(model.weight.detach(), torch.full((1, 2), expected))
    with torch.no_grad():
        model.weight.fill_(7.0)
    la.update(model, step=10, total=10)  # the last step: the model takes the slow weights as they are
    torch.testing.assert_close(model.weight.detach(), torch.full((1, 2), expected))


def test_a_lookahead_context_steps_it_after_the_optimizer():
    from resmlp.train.engine import Lookahead

    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_micro8", embed_dim=16, depth=1)
    ctx = _context(model)
    ctx.schedule.total_steps = 4
    ctx.lookahead = Lookahead(model, every=2)
    images, labels = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    train_one_epoch(ctx, [(images, labels)] * 4, epoch=0, progress=False)
    for slow, fast in zip(ctx.lookahead.module.state_dict().values(), model.state_dict().values()):
        assert torch.equal(slow, fast)  # step 4 of 4 handed the average over


class _Poisoned(nn.Module):
    """A linear classifier whose gradients are NaN while `poisoned` (its forward pass stays finite): what a
    miscompiled backward kernel did to the compiled step (train/parts.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.poisoned = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x)
        if self.poisoned and out.requires_grad:
            out.register_hook(lambda g: torch.full_like(g, float("nan")))
        return out


def test_nonfinite_gradients_skip_the_step_and_the_fallback_goes_on():
    torch.manual_seed(0)
    model = _Poisoned()
    ctx = _context(model)
    fallbacks = []

    def fall_back() -> bool:  # as parts.Run.fall_back_from_compile: a healthy step from now on
        fallbacks.append(ctx.schedule.last_step)
        model.poisoned = False
        return True

    ctx.on_nonfinite_grads = fall_back
    before = model.fc.weight.detach().clone()
    batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
    stats = train_one_epoch(ctx, [batch] * 5, epoch=0, progress=False)
    assert fallbacks == [0]  # called once, before any step was taken
    assert stats.steps == 4 and ctx.schedule.last_step == 4  # the poisoned batch dropped, the other four stepped
    assert torch.isfinite(model.fc.weight).all() and not torch.equal(model.fc.weight, before)


def test_nonfinite_gradients_without_a_fallback_stop_before_the_weights_change():
    torch.manual_seed(0)
    model = _Poisoned()
    before = model.fc.weight.detach().clone()
    batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
    ctx = _context(model)
    with pytest.raises(NonFiniteLossError, match="gradients are not finite at epoch 2, step 0"):
        train_one_epoch(ctx, [batch] * 3, epoch=2, progress=False)
    ctx = _context(model)
    ctx.on_nonfinite_grads = lambda: False  # an eager step already: the gradients are the model's own
    with pytest.raises(NonFiniteLossError, match="gradients are not finite"):
        train_one_epoch(ctx, [batch] * 3, epoch=2, progress=False)
    assert torch.equal(model.fc.weight, before) and ctx.schedule.last_step == 0
