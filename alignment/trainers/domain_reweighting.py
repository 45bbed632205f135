"""Online domain reweighting for any of our trainers: per-domain losses -> update rule -> sampler or loss weights.

Methods (formulas in `alignment.domain_rules`, which holds the update rules; see docs/domain-reweighting.md):
- DoReMi (Xie et al., NeurIPS 2023, arXiv 2305.10429): exponentiated-gradient steps on the clipped excess loss of
  each domain against a reference model; the output is the weights averaged over steps.
- Velocitune (Luo et al., ACL 2025, arXiv 2411.14318): weights follow each domain's normalised remaining gap to a
  target loss.
- "Upsample or Upweight?" (Li et al., NAACL 2025, arXiv 2410.04579): a mixture p can be realised by *sampling*
  domains with p (`upsample`) or by keeping the data distribution q and *scaling* each example's loss by
  ``p_d / q_d`` (`upweight`, the paper's scalarisation weights ``w_i = p(i;τ)/p(i;1)``; equal in expectation,
  higher gradient variance).

Pieces (one job each):
- `OnlineDomainWeights`: the weights, their history, the per-domain losses collected during one optimizer step,
  the cross-process gather and the call to the update rule; `state_dict()` for checkpoints;
- `DomainReweightingCallback`: at every optimizer step end, updates and logs `domain_weight/<name>` (and
  `domain_loss/<name>`, `domain_count/<name>`); at the end writes `domain_weights.json` to `output_dir`;
- `DomainReweighting` (``trainer.domains``): the two calls every trainer's loss code makes, the same in all of them
  (preference, SFT, group RL): ``self.domains.apply(domain_ids, values)`` scales per-example values (losses, loss
  sums, advantages) by their domain's upweight factor (unchanged outside upweight training), and
  ``self.domains.record(domain_ids, losses, counts)`` hands the per-example losses (and, for DoGE, their gradients)
  to the online update. Both are no-ops when reweighting is off, so trainers call them unconditionally;
- `DomainReweightingMixin`: put it in a `transformers.Trainer` subclass's bases after `TrainerHooks`. It validates
  the config and the dataset before training, installs the `DomainWeightedSampler` (upsample), builds
  ``self.domains`` and registers the state with ``self.process_states`` (`domain_weights.pt`, per rank with several
  processes), so it is saved with every checkpoint and restored on resume.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from ..domain_rules import (
    DomainWeightState,
    get_domain_update,
    list_domain_updates,
    update_domain_state,
    validate_domain_update,
)
from ..mixtures import temperature_shares
from ..recipe_values import parse_mapping_text
from .domain_gradients import DomainGradients
from .domain_sampler import DomainWeightedSampler, prefetch_lag
from .gradients import select_gradient_parameters

MODES = ("upweight", "upsample")
# `domain_reweighting: static` keeps the initial weights (a fixed mixture realised by sampling or by loss weights).
STATIC = "static"
STATE_NAME = "domain_weights.pt"
FINAL_WEIGHTS_NAME = "domain_weights.json"


# ---------------------------------------------------------------------------------------------- update-rule registry
# The per-step inputs the online loop can hand a rule (`DomainUpdateSpec.inputs` names them). A rule runs online when
# its required inputs are among them; optional inputs outside (DoGE's `gram`, `target_grads`) are left unset.
# `previous_excess_loss` is never needed: an absent domain keeps its previous loss here, so its excess is the previous
# one. `grads` (DoGE) are per-domain gradients computed by `DomainGradients` in trainers that support it.
GRADIENT_INPUTS = frozenset({"grads", "learning_rate"})
ONLINE_INPUTS = frozenset({"losses", "ref_losses", "target_losses", "initial_losses", "excess_loss", "sizes",
                           "previous_excess_loss"}) | GRADIENT_INPUTS
_REFERENCE_INPUTS = frozenset({"ref_losses", "target_losses", "excess_loss"})


def list_update_rules() -> list[str]:
    return [STATIC, *list_domain_updates()]


# ---------------------------------------------------------------------------------------------- config values
def load_mapping(value: Any, field_name: str) -> dict[str, float] | None:
    """A ``{domain: float}`` mapping from a dict, a JSON string, or a JSON/YAML file (a DoReMi output fragment).

    A file may hold the mapping itself, or `domain_weights:`/`weights:` at the top level.
    """
    if value is None or value == {}:
        return None
    value = parse_mapping_text(value, field_name=field_name, files=True)
    if isinstance(value, Mapping):
        for key in ("domain_weights", "weights"):
            if isinstance(value.get(key), Mapping):
                value = value[key]
                break
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"`{field_name}` must map domain names to numbers, e.g. {{addition: 0.5, counting: 0.5}}.")
    try:
        return {str(k): float(v) for k, v in value.items()}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`{field_name}` must map domain names to numbers, got {dict(value)!r}.") from exc


def _vector(mapping: dict[str, float], names: list[str], field_name: str) -> torch.Tensor:
    missing, extra = sorted(set(names) - set(mapping)), sorted(set(mapping) - set(names))
    if missing or extra:
        raise ValueError(f"`{field_name}` must name exactly the training domains {names}; missing {missing}, "
                         f"unknown {extra}.")
    return torch.tensor([mapping[name] for name in names], dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- state
class OnlineDomainWeights:
    """Domain weights updated once per optimizer step from the per-domain losses of that step, over all processes.

    Args:
        domain_names: the K domains, in id order.
        data_shares: ``[K]`` share of each domain in the training data (what a uniform random sampler draws).
        initial_weights: ``[K]`` starting weights (normalised here).
        rule: a name from `alignment.domain_rules.list_domain_updates()`, or ``"static"`` (never update).
        rule_kwargs: the rule's hyper-parameters.
        reference_losses: ``[K]`` per-domain reference (DoReMi's ``ref_losses``) / target (Velocitune's
            ``target_losses``) losses, if given.
        sizes: ``[K]`` domain sizes (rows), for schedule rules such as `cooldown`.
        update_every: update every this many optimizer steps (Velocitune's m).
        gather: ``tensor -> tensor`` concatenating a tensor over processes (``accelerator.gather``); identity alone.

    Per-domain loss of a step: ``L_i = Σ loss_sums[d == i] / Σ counts[d == i]`` over every micro-batch and
    process of the step (per token when counts are token counts, per example when they are 1). A domain absent
    from the step keeps its previous value, as in DoReMi's code; before it has any value it counts as 0 (for
    DoReMi: no change to its logit). With ``records_excess`` (SFT with a DoReMi reference model) the recorded sums
    are already the per-token clipped excess, handed to the rule as ``excess_loss``.

    The weights after every optimizer step are kept (`history`, ``[steps + 1, K]``): the upsample sampler draws
    step ``s`` with ``history[s - lag]``, also when a resumed run replays the epoch's first draws.
    """

    def __init__(self, domain_names: list[str], data_shares: torch.Tensor, initial_weights: torch.Tensor,
                 rule: str = STATIC, rule_kwargs: dict[str, Any] | None = None,
                 reference_losses: torch.Tensor | None = None, sizes: torch.Tensor | None = None,
                 update_every: int = 1, gather: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.domain_names = list(domain_names)
        k = len(self.domain_names)
        self.data_shares = torch.as_tensor(data_shares, dtype=torch.float64)
        weights = torch.as_tensor(initial_weights, dtype=torch.float64)
        self.state = DomainWeightState(weights / weights.sum(), domains=self.domain_names)
        self.rule = rule
        self.rule_kwargs = dict(rule_kwargs or {})
        self.reference_losses = None if reference_losses is None else torch.as_tensor(reference_losses,
                                                                                       dtype=torch.float64)
        self.sizes = None if sizes is None else torch.as_tensor(sizes, dtype=torch.float64)
        self.records_excess = False
        self.update_every = int(update_every)
        self.gather = gather or (lambda tensor: tensor)
        self.device = torch.device("cpu")
        self.history: list[torch.Tensor] = [self.weights.clone()]
        self.last_losses = torch.zeros(k, dtype=torch.float64)
        self.seen = torch.zeros(k, dtype=torch.bool)
        self.initial_losses: torch.Tensor | None = None
        # DoGE: per-domain gradients (set by the trainer) and the learning rate of the step they were computed at.
        self.gradients: DomainGradients | None = None
        self.last_grads: torch.Tensor | None = None
        self.learning_rate: float | None = None
        self._reset_accumulators()

    # ---- weights
    @property
    def weights(self) -> torch.Tensor:
        return self.state.weights.double()

    @property
    def initial_weights(self) -> torch.Tensor:
        return self.history[0]

    @property
    def average_weights(self) -> torch.Tensor:
        """ᾱ = mean of the weights produced by the updates (DoReMi's output); the initial weights before any."""
        return self.state.average.double()

    @property
    def num_updates(self) -> int:
        return self.state.step

    def weights_for_step(self, step: int, lag: int = 1) -> torch.Tensor:
        """The weights after optimizer step ``step - lag`` (clamped to what exists): what the sampler uses at
        ``step``."""
        return self.history[min(max(0, step - lag), len(self.history) - 1)]

    def example_weights(self, domain_ids: torch.Tensor) -> torch.Tensor:
        """``[B]`` loss weights ``w_d / q_d`` (upweight): 1 for every example when the weights equal the data shares.

        With K equally sized domains this is ``K · w_d``.
        """
        ratio = (self.weights / self.data_shares).to(torch.float32)
        return ratio.to(domain_ids.device)[domain_ids]

    # ---- per-step collection
    def _reset_accumulators(self) -> None:
        k = len(self.domain_names)
        self._loss_sums = torch.zeros(k, dtype=torch.float64)
        self._counts = torch.zeros(k, dtype=torch.float64)

    def record(self, domain_ids: torch.Tensor, loss_sums: torch.Tensor, counts: torch.Tensor | None = None) -> None:
        """Add a micro-batch: ``domain_ids [B]``, ``loss_sums [B]`` (loss summed over the example's tokens, or the
        example's loss), ``counts [B]`` (its token count, or 1). Detached; ids outside ``0..K-1`` are ignored."""
        domain_ids = domain_ids.detach().long().flatten().cpu()
        loss_sums = loss_sums.detach().double().flatten().cpu()
        counts = torch.ones_like(loss_sums) if counts is None else counts.detach().double().flatten().cpu()
        keep = (domain_ids >= 0) & (domain_ids < len(self.domain_names))
        self._loss_sums.index_add_(0, domain_ids[keep], loss_sums[keep])
        self._counts.index_add_(0, domain_ids[keep], counts[keep])

    def _gathered(self) -> tuple[torch.Tensor, torch.Tensor]:
        # Sums and counts (not means) add across ranks; float64 so the sum is exact enough on every backend that has
        # it (gloo, nccl).
        k = len(self.domain_names)
        local = torch.cat([self._loss_sums, self._counts]).to(device=self.device)
        total = self.gather(local).reshape(-1, 2 * k).sum(0).cpu()
        return total[:k], total[k:]

    def step_end(self) -> dict[str, float]:
        """End of an optimizer step (every process, same moment): gather, maybe update; returns the metrics to log."""
        sums, counts = self._gathered()
        self._reset_accumulators()
        present = counts > 0
        self.last_losses = torch.where(present, sums / counts.clamp(min=1e-12), self.last_losses)
        self.seen |= present
        if self.initial_losses is None and bool(self.seen.all()):
            self.initial_losses = self.last_losses.clone()
        if self.gradients is not None:  # collective: every process, every step
            self.last_grads = self.gradients.step_end()
        if self.rule != STATIC and len(self.history) % self.update_every == 0:
            self._update()
        self.history.append(self.weights.clone())
        metrics = {f"domain_weight/{name}": float(w) for name, w in zip(self.domain_names, self.weights)}
        metrics.update({f"domain_loss/{name}": float(v) for name, v in zip(self.domain_names, self.last_losses)})
        metrics.update({f"domain_count/{name}": float(c) for name, c in zip(self.domain_names, counts)})
        return metrics

    def rule_inputs(self) -> dict[str, torch.Tensor | None]:
        """What the online loop knows, under the input names of `alignment.domain_rules` rules."""
        if self.records_excess:
            return {"excess_loss": self.last_losses, "sizes": self.sizes}
        return {"losses": self.last_losses, "ref_losses": self.reference_losses,
                "target_losses": self.reference_losses, "initial_losses": self.initial_losses, "sizes": self.sizes,
                "grads": self.last_grads, "learning_rate": self.learning_rate}

    def _update(self) -> None:
        spec = get_domain_update(self.rule)
        inputs = {key: value for key, value in self.rule_inputs().items() if key in spec.inputs and value is not None}
        if any(inputs.get(name) is None for name in spec.required):
            return  # e.g. Velocitune before every domain has an initial loss: keep the weights
        if "learning_rate" in inputs and not inputs["learning_rate"] > 0:
            # DoGE's scores are η_t·W clipped to [η_t·dw_min, η_t·dw_max]: all 0 at η_t = 0 (warm-up start), so the
            # step leaves the weights unchanged; the rule itself rejects η_t <= 0.
            self.state.record(self.state.weights)
            return
        # Through the state: a rule with buffers (ScaleBiO's AdamW moments) reads and replaces them there.
        update_domain_state(self.rule, self.state, **inputs, **self.rule_kwargs)

    # ---- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "domain_names": list(self.domain_names),
            "rule": self.rule,
            "weights": self.state.state_dict(),
            "history": torch.stack(self.history),
            "last_losses": self.last_losses.clone(),
            "seen": self.seen.clone(),
            "initial_losses": None if self.initial_losses is None else self.initial_losses.clone(),
            "gradients": None if self.gradients is None else self.gradients.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["domain_names"]) != self.domain_names or state["rule"] != self.rule:
            raise ValueError(
                f"The checkpoint's domain weights are for domains {state['domain_names']} with rule {state['rule']!r}; "
                f"this run has {self.domain_names} with {self.rule!r}. Resume with the same data and "
                "`domain_reweighting`."
            )
        self.state.load_state_dict(state["weights"])
        self.history = [row.clone() for row in state["history"]]
        self.last_losses = state["last_losses"].clone()
        self.seen = state["seen"].clone()
        self.initial_losses = None if state["initial_losses"] is None else state["initial_losses"].clone()
        if self.gradients is not None:
            self.gradients.load_state_dict(state["gradients"])
            self.last_grads = self.gradients.last.clone()
        self._reset_accumulators()

    def summary(self) -> dict[str, Any]:
        """What `domain_weights.json` holds: final and averaged weights by domain, the data shares, the rule."""
        def by_name(values):
            return {name: float(value) for name, value in zip(self.domain_names, values)}

        return {"rule": self.rule, "num_updates": self.num_updates, "initial_weights": by_name(self.initial_weights),
                "final_weights": by_name(self.weights), "average_weights": by_name(self.average_weights),
                "data_shares": by_name(self.data_shares), "last_domain_losses": by_name(self.last_losses)}


# ---------------------------------------------------------------------------------------------- validation
def domain_column_values(dataset, split_name: str = "train") -> list[str]:
    """The `domain` column as strings; a clear error if the dataset cannot be reweighted."""
    from datasets import Dataset

    if not isinstance(dataset, Dataset):
        raise ValueError(
            f"Domain reweighting needs a map-style `datasets.Dataset` with a known size for the {split_name} split "
            f"(got {type(dataset).__name__}); turn off `dataset_streaming` or `domain_reweighting`."
        )
    if "domain" not in dataset.column_names:
        raise ValueError(
            f"`domain_reweighting` is set but the {split_name} dataset has no `domain` column (columns: "
            f"{sorted(dataset.column_names)}). Add one naming each row's domain, e.g. "
            "`dataset = dataset.map(lambda row: {'domain': row['source']})`, use a `share_mixture` "
            "(which adds it), or `dataset_name: task-suite` (which has one)."
        )
    values = [str(v) for v in dataset["domain"]]
    if any(v in ("", "None") for v in values):
        raise ValueError(f"Some rows of the {split_name} dataset have an empty `domain`; every row needs one.")
    return values


def build_online_weights(args, train_dataset) -> tuple[OnlineDomainWeights, list[int]]:
    """Validate the `domain_*` fields of `args` against the dataset and build the state. Returns it and the
    per-row domain ids. Errors name the field and the fix, before any model step."""
    rule = args.domain_reweighting
    valid = list_update_rules()
    if rule not in valid:
        raise ValueError(f"Unknown `domain_reweighting: {rule}`; valid: {valid}.")
    values = domain_column_values(train_dataset)
    names = sorted(set(values))
    index = {name: i for i, name in enumerate(names)}
    ids = [index[v] for v in values]
    sizes = torch.bincount(torch.tensor(ids), minlength=len(names)).double()
    data_shares = sizes / sizes.sum()

    given = load_mapping(args.domain_initial_weights, "domain_initial_weights")
    if given is not None and args.domain_temperature is not None:
        raise ValueError("Set `domain_initial_weights` or `domain_temperature`, not both.")
    if given is not None:
        initial = _vector(given, names, "domain_initial_weights")
        if (initial < 0).any() or not initial.sum() > 0:
            raise ValueError(f"`domain_initial_weights` must be non-negative and not all 0, got {given}.")
    elif args.domain_temperature is not None:  # > 0, checked by the config
        initial = temperature_shares(sizes, args.domain_temperature).double()
    else:
        initial = torch.full((len(names),), 1.0 / len(names), dtype=torch.float64)

    reference = load_mapping(args.domain_reference_losses, "domain_reference_losses")
    reference = None if reference is None else _vector(reference, names, "domain_reference_losses")
    reference_model = getattr(args, "domain_reference_model", None)
    kwargs = dict(args.domain_reweighting_kwargs or {})
    if rule == STATIC and kwargs:
        raise ValueError(f"`domain_reweighting_kwargs={kwargs}` is set but `domain_reweighting: static` takes none.")
    if rule != STATIC:
        _check_rule(rule, kwargs, has_reference=reference is not None or reference_model is not None)
    state = OnlineDomainWeights(names, data_shares, initial, rule=rule, rule_kwargs=kwargs,
                                reference_losses=reference, sizes=sizes, update_every=args.domain_update_every)
    return state, ids


def _check_rule(rule: str, kwargs: dict[str, Any], has_reference: bool) -> None:
    """Fail before training if the rule needs inputs the online loop cannot give, or gets bad hyper-parameters."""
    spec = get_domain_update(rule)
    offline = sorted(set(spec.required) - ONLINE_INPUTS)
    if offline or not set(spec.inputs) & ONLINE_INPUTS:
        raise ValueError(
            f"`domain_reweighting: {rule}` takes {offline}, which the online loop does not compute (it collects "
            f"per-domain losses only). Online rules: {[n for n in list_update_rules() if _is_online(n)]}."
        )
    if _REFERENCE_INPUTS & set(spec.inputs) and not has_reference:
        raise ValueError(
            f"`domain_reweighting: {rule}` needs per-domain reference/target losses: set `domain_reference_losses` "
            "(a mapping or a file, e.g. the one scripts/run_doremi.py writes)"
            + (" or, for SFT, `domain_reference_model` (per-token excess loss)." if "excess_loss" in spec.inputs
               else ".")
        )
    computed = sorted(set(kwargs) & set(spec.inputs))
    if computed:
        raise ValueError(f"{computed} are computed during training; remove them from `domain_reweighting_kwargs`.")
    validate_domain_update(rule, **kwargs)  # unknown keys and bad values, with the valid ones in the message


def _is_online(rule: str) -> bool:
    if rule == STATIC:
        return True
    spec = get_domain_update(rule)
    return set(spec.required) <= ONLINE_INPUTS and bool(set(spec.inputs) & ONLINE_INPUTS)


def needs_gradients(rule: str) -> bool:
    """Whether the rule takes per-domain gradients (DoGE), which the trainer must then compute."""
    return rule != STATIC and "grads" in get_domain_update(rule).inputs


# ---------------------------------------------------------------------------------------------- trainer glue
class DomainReweightingCallback(TrainerCallback):
    """Updates the weights at every optimizer step end (all ranks), logs them, writes `domain_weights.json` at the end.

    Metrics go to the trainer's `_metrics["train"]` (TRL trainers average and log them with their own), replaced
    rather than appended so each log shows the weights after the latest update.
    """

    def __init__(self, trainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        metrics = self.trainer.domain_weights.step_end()
        for key, value in metrics.items():
            self.trainer._metrics["train"][key] = [value]
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            os.makedirs(args.output_dir, exist_ok=True)
            path = Path(args.output_dir) / FINAL_WEIGHTS_NAME
            path.write_text(json.dumps(self.trainer.domain_weights.summary(), indent=2) + "\n")
        return control


class DomainReweighting:
    """Online domain reweighting as a trainer's loss code sees it (``trainer.domains``); see the module docstring.

    Args:
        trainer: the trainer (its ``model.training``, ``args`` and learning-rate scheduler are read at every call).
        weights: the online state, or None when `args.domain_reweighting` is off (then every call is a no-op).
    """

    def __init__(self, trainer, weights: OnlineDomainWeights | None = None):
        self.trainer = trainer
        self.weights = weights

    @property
    def active(self) -> bool:
        return self.weights is not None

    @property
    def upweighting(self) -> bool:
        return self.weights is not None and self.trainer.args.domain_reweighting_mode == "upweight"

    def factors(self, domain_ids: torch.Tensor | None) -> torch.Tensor | None:
        """``[B]`` per-example loss weights in upweight mode during training, else None (leave the loss alone)."""
        if not self.upweighting or domain_ids is None or not self.trainer.model.training:
            return None
        return self.weights.example_weights(domain_ids)

    def apply(self, domain_ids: torch.Tensor | None, values: torch.Tensor) -> torch.Tensor:
        """``values`` ``[B]`` (per-example losses, loss sums or advantages), each scaled by its domain's factor
        ``w_d / q_d`` when upweighting in training; ``values`` itself otherwise. Evaluation stays unweighted."""
        factors = self.factors(domain_ids)
        return values if factors is None else values * factors.to(values.dtype)

    def normalizer(self, domain_ids: torch.Tensor | None, counts: torch.Tensor) -> torch.Tensor | None:
        """With ``domain_upweight_normalize`` while upweighting: ``Σ_b c_b · counts_b``, the denominator of DoReMi's
        proxy loss ``Σ c ℓ / Σ c`` (counts: 1 per example, or its token count). None otherwise: the trainer keeps
        its own denominator (the unbiased scalarisation of "Upsample or Upweight?")."""
        if not getattr(self.trainer.args, "domain_upweight_normalize", False) or self.factors(domain_ids) is None:
            return None
        return self.apply(domain_ids, counts).sum()

    def record(self, domain_ids: torch.Tensor | None, losses: torch.Tensor, counts: torch.Tensor | None = None, *,
               gradients_of: torch.Tensor | None = None) -> None:
        """Hand a training micro-batch to the online update: ``losses`` ``[B]`` (each example's loss, or its token
        losses summed; detached here), ``counts`` ``[B]`` (its token count, or None for 1 per example).

        DoGE (a rule taking per-domain gradients): also the per-domain gradients of ``gradients_of`` (``[B]``, with
        its graph; default ``losses``), without touching the training gradient (`DomainGradients`). SFT passes the
        token NLL there when ``losses`` is the clipped excess against a reference model. A no-op in evaluation.
        """
        state = self.weights
        if state is None or domain_ids is None or not self.trainer.model.training:
            return
        state.record(domain_ids, losses, counts)
        if state.gradients is None or not torch.is_grad_enabled():
            return
        scheduler = getattr(self.trainer, "lr_scheduler", None)
        state.learning_rate = (float(scheduler.get_last_lr()[0]) if scheduler is not None
                               else self.trainer.args.learning_rate)
        state.gradients.record(domain_ids, losses if gradients_of is None else gradients_of, counts)


class DomainReweightingMixin:
    """Online domain reweighting for a `transformers.Trainer` subclass (after `TrainerHooks` in the bases). Inactive
    unless `args.domain_reweighting` is set. Pass `args` and `train_dataset` as keywords."""

    domain_weights: OnlineDomainWeights | None = None
    # False for trainers whose train sampler must not be replaced (GRPO repeats each prompt for its group).
    _domain_upsampling_supported = True
    # True for trainers that compute per-token losses of a `domain_reference_model` (DomainSFTTrainer).
    _domain_reference_model_supported = False
    # True for trainers that hand differentiable per-example losses to `domains.record` (DoGE).
    _domain_gradients_supported = False

    def __init__(self, *positional, **kwargs):
        args, train_dataset = kwargs.get("args"), kwargs.get("train_dataset")
        domain_weights, row_domain_ids = None, None
        if args is not None and getattr(args, "domain_reweighting", None):
            if args.domain_reweighting_mode == "upsample" and not self._domain_upsampling_supported:
                raise ValueError(f"{type(self).__name__} cannot replace its train sampler; use "
                                 "`domain_reweighting_mode: upweight` (per-example loss / advantage weights).")
            if getattr(args, "domain_reference_model", None) and not self._domain_reference_model_supported:
                raise ValueError(f"`domain_reference_model` (per-token excess loss) is implemented for SFT only; with "
                                 f"{type(self).__name__} give per-domain `domain_reference_losses` instead.")
            domain_weights, row_domain_ids = build_online_weights(args, train_dataset)
            self._check_gradient_options(args)
            if args.domain_reweighting_mode == "upsample":
                self._check_sampling_options(args)
        super().__init__(*positional, **kwargs)
        self.domain_weights = domain_weights
        self.domains = DomainReweighting(self, domain_weights)
        self._row_domain_ids = row_domain_ids
        if domain_weights is not None:
            # The parent may have prepared (and filtered) the dataset: the sampler indexes the prepared rows.
            prepared = domain_column_values(self.train_dataset)
            lookup = {name: i for i, name in enumerate(domain_weights.domain_names)}
            self._row_domain_ids = [lookup[value] for value in prepared]
            domain_weights.gather = self.accelerator.gather
            domain_weights.device = self.accelerator.device
            if needs_gradients(args.domain_reweighting):
                last_layers, pattern = args.domain_doge_last_layers, args.domain_doge_params
                chosen = select_gradient_parameters(
                    self.model, pattern=pattern, blocks=lambda count: (count - last_layers, count - 1),
                    field="domain_doge_params" if pattern is not None else "domain_doge_last_layers",
                    no_blocks_fix="set `domain_doge_params` to a regular expression over parameter names.")
                domain_weights.gradients = DomainGradients(
                    [p for _, p in chosen], len(domain_weights.domain_names),
                    reduce_sum=lambda tensor: self.accelerator.reduce(tensor, reduction="sum"))
            self.add_callback(DomainReweightingCallback(self))
            self.kept_columns.append("domain")  # compute_loss / the collator read it
            self.process_states.register(
                STATE_NAME, domain_weights,
                missing_hint="the checkpoint has no domain-weight state (saved without `domain_reweighting`, or with "
                             "`save_only_model`). Resume from a checkpoint of a reweighted run, or start a new run.",
            )

    def _check_gradient_options(self, args) -> None:
        """DoGE (per-domain gradients): trainer support and distributed setups, checked before the model is built."""
        rule = args.domain_reweighting
        if not needs_gradients(rule):
            chose = getattr(args, "domain_doge_params", None) is not None
            if chose or getattr(args, "domain_doge_last_layers", 1) != 1:
                raise ValueError(f"`domain_doge_params` / `domain_doge_last_layers` choose the parameters of DoGE's "
                                 f"per-domain gradients; `domain_reweighting: {rule}` uses none. Remove them.")
            return
        if not self._domain_gradients_supported:
            raise ValueError(f"`domain_reweighting: {rule}` needs per-domain gradients, which {type(self).__name__} "
                             "does not compute (implemented for SFT and preference training). Use a loss-based rule "
                             "(`doremi`, `velocitune`) here.")
        deepspeed = getattr(args, "hf_deepspeed_config", None)
        if deepspeed is not None and deepspeed.is_zero3():
            raise ValueError(f"`domain_reweighting: {rule}` differentiates w.r.t. parameters that DeepSpeed ZeRO-3 "
                             "partitions across ranks; use ZeRO-1/2 or DDP.")
        if getattr(args, "fsdp", None):
            raise ValueError(f"`domain_reweighting: {rule}` does not support FSDP (sharded, flattened parameters); "
                             "use DDP or DeepSpeed ZeRO-1/2.")
        checkpointing_kwargs = args.gradient_checkpointing_kwargs or {}
        if args.gradient_checkpointing and checkpointing_kwargs.get("use_reentrant", False):
            raise ValueError(f"`domain_reweighting: {rule}` calls torch.autograd.grad, which reentrant activation "
                             "checkpointing does not support; set `gradient_checkpointing_kwargs: "
                             "{use_reentrant: false}`.")

    @staticmethod
    def _check_sampling_options(args) -> None:
        if args.domain_reweighting_mode == "upsample" and getattr(args, "train_sampling_strategy", "random") not in (
                "random", None):
            raise ValueError(f"`domain_reweighting_mode: upsample` brings its own sampler; it cannot be combined "
                             f"with `train_sampling_strategy: {args.train_sampling_strategy}`.")

    # ---- sampler (upsample)
    def _get_train_sampler(self, train_dataset=None):
        if self.domain_weights is None or self.args.domain_reweighting_mode != "upsample":
            return super()._get_train_sampler(train_dataset)
        args = self.args
        draws = args.per_device_train_batch_size * max(1, args.world_size) * args.gradient_accumulation_steps
        lag = prefetch_lag(args.gradient_accumulation_steps, args.dataloader_num_workers,
                           args.dataloader_prefetch_factor)
        weights = self.domain_weights
        return DomainWeightedSampler(self._row_domain_ids, len(weights.domain_names),
                                     lambda step: weights.weights_for_step(step, lag), draws_per_step=draws,
                                     seed=args.data_seed if args.data_seed is not None else args.seed)

    def domain_example_weights(self, domain_ids: torch.Tensor | None) -> torch.Tensor | None:
        """``[B]`` per-example loss weights in upweight mode during training, else None (`domains.factors`)."""
        return self.domains.factors(domain_ids)
