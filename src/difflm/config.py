"""Run configuration: one frozen dataclass per concern, YAML/JSON round-trip, overrides.

A config is data only. `Config.from_dict` rejects unknown keys (a typo in a YAML file
or a `--set` must fail loudly, not be ignored), and `with_overrides(["train.steps=500"])`
returns a new config with dotted keys replaced.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

#: Values of `model.generator`; the non-diffusion ones each have a sampler of the same name.
#: The model families: continuous diffusion (Diffusion-LM), the causal LM, masked diffusion
#: (MDLM) and uniform-noise diffusion (UDLM).
MODEL_KINDS = ("diffusion", "autoregressive", "masked", "uniform")
#: What a uniform-noise run descends (`DiffusionConfig.uniform_loss`).
UNIFORM_LOSSES = ("posterior", "nelbo")
#: The discrete diffusion kinds: one token denoiser (`model/tokens.py`), two forward processes.
TOKEN_KINDS = ("masked", "uniform")
GENERATORS = ("diffusion", "shortcut", "meanflow", "consistency", "distilled")

#: The teacher samplers a distilled student can learn (`distill.sampler`).
TEACHER_SAMPLERS = ("ddpm", "ddim")

#: What a denoiser can be conditioned on (model.condition).
CONDITIONS = ("none", "slots", "source")


@dataclass(frozen=True)
class DataConfig:
    """Corpus and padding.

    Attributes:
        corpus: corpus spec: `grammar` (bundled), `lines:PATH` or `e2e:PATH[,PATH]`.
        max_len: L, positions per sentence including START and END.
        min_count: words seen fewer times map to UNK.
        overlong: `truncate` (and count), `skip` (drop and count) or `refuse` sentences
            longer than L.
        holdout: held-out share (float < 1) or count (int) for the held-out loss.
        source_len: S, positions of a source (START and END included) for
            model.condition=source; longer sources are cut.
        delexicalise: under model.condition=source, the values of the MR slots
            `delex_slots` become placeholder words in the source and the sentence, and are
            put back after writing (`text/delex.py`).
        delex_slots: those slots, comma-separated, of the ones said word for word (name,
            eatType, food, area, near): the proper names (name, near) by default; values
            that a test split holds and the training split never shows (food, eatType) may
            be added.
    """

    corpus: str = "grammar"
    max_len: int = 48
    min_count: int = 1
    overlong: Literal["truncate", "skip", "refuse"] = "truncate"
    holdout: float = 0.02
    source_len: int = 48
    delexicalise: bool = False
    delex_slots: str = "name,near"


@dataclass(frozen=True)
class ModelConfig:
    """The network: the denoiser f(x_t, t) and its embeddings, a causal LM, or a token denoiser.

    Attributes:
        kind: `diffusion` (the denoiser), `autoregressive` (the teacher LM and AR
            baseline), `masked` or `uniform` (discrete diffusion, `model/tokens.py`); the
            last three use hidden, layers, heads and dropout only.
        embed_dim: d, the size of a word embedding (the paper uses 16 for E2E).
        hidden: transformer width.
        layers: transformer blocks.
        heads: attention heads.
        dropout: dropout inside the transformer.
        predict: what the network outputs: `x0`, `eps`, `v`, or `logits` (the
            cross-entropy parameterization of CDCD/Plaid: x̂0 = softmax(logits)·EMB).
        self_condition: feed the previous x̂0 back as an input (Analog Bits).
        normalize_embeddings: keep EMB rows at norm √d.
        posterior_input: also feed the network E_q(w|x_t)[W_in(w)], learned H-dim word vectors
            averaged under the context-free word posterior q(w | x_t).
        condition: `none`; `slots`: condition the network on each sentence's slot values
            (grammar or E2E MR) for classifier-free guidance, the label set saved as
            conditions.json in the run directory; or `source`: on a source text (the
            linearised MR, or a `source<TAB>target` line), read as a clean prefix of the
            same sequence (DiffuSeq's partial noising; `model/source.py`).
        generator: what the network is trained to be: `diffusion` (the denoiser of
            `objectives/diffusion.py`), or a one/few-step model: `shortcut` (Frans et al.
            2024), `meanflow` (Geng et al. 2025) or `consistency` (Song et al. 2023;
            distilled when `train.teacher` is set). Each has its config section and
            its sampler of the same name.
    """

    kind: str = "diffusion"
    embed_dim: int = 16
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    # Default recipe: the cross-entropy parameterization with normalised embeddings and
    # the posterior input, no dropout (runs here are far too short to overfit): the best
    # of the recipes measured at equal CPU time (docs/benchmarks.md).
    dropout: float = 0.0
    predict: str = "logits"
    self_condition: bool = False
    normalize_embeddings: bool = True
    posterior_input: bool = True
    condition: str = "none"
    generator: str = "diffusion"


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule and the end-to-end objective's weights.

    Attributes:
        schedule: `sqrt` (Diffusion-LM), `cosine` or `linear`.
        steps: T, the number of training diffusion steps.
        rounding_weight: weight of −log p(w | x0).
        self_cond_prob: probability of training with a self-conditioning input.
        self_cond_gap: the self-conditioning input is the x̂0 of a noisier point x_t' of
            the same forward trajectory, t' − t ~ U[0, gap] (clipped at 1), as a sampler's
            previous step supplies it; 0 = Analog Bits (x̂0 of x_t itself).
        cond_drop: probability p that a row's condition is replaced by the null
            condition ∅ (classifier-free guidance); used when model.condition is set.
        length_anchors: give the denoiser each row's length: END and the PAD positions
            after it stay clean at every t (anchors), so it learns p(x | n) and sampling
            draws n from the training sentences' lengths (`model/anchors.py`).
        sweep: the share of training rows noised left to right (AR-Diffusion,
            `diffusion/sweep.py`): each position its own time, left ones cleaner; the other
            rows keep the shared t that guidance and the other samplers use. 0 = off.
        sweep_lag: λ, how far (in t) the sweep's first word runs ahead of its last.
        uniform_loss: what a uniform-noise run (model.kind=uniform) descends: `posterior`,
            the cross-entropy of p_θ(x_i | z_t) at every noisable position (low variance;
            its optimum is the exact x_θ too, `model/tokens.py`), or `nelbo`, UDLM's
            continuous-time bound. Both are logged; `posterior` trains far better at this
            machine's budgets (docs/benchmarks.md, "Uniform-noise diffusion").
    """

    schedule: str = "sqrt"
    steps: int = 2000
    rounding_weight: float = 1.0
    self_cond_prob: float = 0.5
    self_cond_gap: float = 0.0
    cond_drop: float = 0.1
    length_anchors: bool = False
    sweep: float = 0.0
    sweep_lag: float = 1.0
    uniform_loss: str = "posterior"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, checkpoints and device.

    Attributes:
        steps: optimizer steps in total.
        batch_size: sentences per step (per process under DDP).
        lr: peak learning rate of AdamW.
        warmup: linear warmup steps.
        weight_decay: AdamW weight decay.
        grad_clip: max global gradient norm (0 = off).
        ema_decay: decay of the EMA weights used for sampling.
        eval_every: steps between held-out loss evaluations.
        checkpoint_every: steps between checkpoints.
        log_every: steps between metrics.jsonl rows.
        seed: seed for init, data order and noise.
        device: `auto` (CUDA when present), `cpu`, `cuda`, `cuda:1`, ...
        bf16: bf16 autocast for the forward pass.
        time_limit: stop (and checkpoint) after this many minutes; 0 = no limit.
        patience: early stopping: stop once the held-out loss has not improved for this
            many evaluations. A checkpoint is then written only at a new best held-out
            loss, so the run always holds its best weights (0: off; every
            checkpoint_every steps and the last step are saved).
        threads: torch intra-op threads (0 = torch's default).
        length_pool: length bucketing: sort the rows of this many batches by length and
            give each batch a run of similar lengths, cut after its longest row, so compute
            goes to words (0: every row is padded to L). A denoiser needs
            diffusion.length_anchors for it: it never sees the cut PAD tail.
        teacher: a trained diffusion run directory to distil (`model.generator=consistency`
            only): the student starts from its EMA weights and vocabulary; "" = none.
    """

    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    eval_every: int = 250
    checkpoint_every: int = 500
    log_every: int = 50
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    time_limit: float = 0.0
    patience: int = 0
    threads: int = 0
    length_pool: int = 0
    teacher: str = ""


@dataclass(frozen=True)
class ShortcutConfig:
    """The shortcut model (`model.generator=shortcut`; `objectives/shortcut.py`).

    Attributes:
        levels: log2 M: jumps d ∈ {1, 1/2, ..., 2^-levels} of the path are trained, so
            the sampler takes K ∈ {1, 2, 4, ..., 2^levels} steps (official: 7, M = 128).
        bootstrap_share: share of each batch trained on self-consistency targets; the
            rest is flow matching (official code: 1/8; the paper quotes 1/4).
    """

    levels: int = 7
    bootstrap_share: float = 0.25


@dataclass(frozen=True)
class MeanFlowConfig:
    """MeanFlow (`model.generator=meanflow`; `objectives/meanflow.py`).

    Attributes:
        jump_share: share of each batch with r < t (the rest has r = t: flow matching).
        time_mean: P_mean of the logit-normal draws of t and r.
        time_std: P_std of those draws.
        power: p of the adaptive weight 1/(‖Δ‖² + c)^p (0 = plain squared error).
        weight_eps: c of the adaptive weight.
    """

    jump_share: float = 0.5
    time_mean: float = -0.4
    time_std: float = 1.0
    power: float = 1.0
    weight_eps: float = 0.01


@dataclass(frozen=True)
class ConsistencyConfig:
    """Consistency models (`model.generator=consistency`; `objectives/consistency.py`).

    Attributes:
        num_scales: N, the noise levels of the discretised ODE (a Karras grid, ρ = 7,
            spanning the schedule's trained range).
        denoise_weight: weight of the cross-entropy of the network's own word logits at
            the noisier point (a denoising regulariser, as CTM adds one; 0 = pure CM).
    """

    num_scales: int = 18
    denoise_weight: float = 0.1


@dataclass(frozen=True)
class DistillConfig:
    """Sampler distillation (`model.generator=distilled`; `objectives/distillation.py`).

    Attributes:
        sampler: the teacher's sampler, `ddpm` (with noise tied to x_T; its students draft
            better, docs/benchmarks.md) or
            `ddim` (η = 0; easier to copy, a weaker sampler at low temperature).
        teacher_steps: K, its steps (on the trailing grid).
        temperature: the teacher sampler's x̂0 temperature (the sampling default, 0.1).
        denoise_weight: weight of the diffusion objective on the corpus, which keeps the
            student a denoiser for the refinement steps (0 = a pure one-step student).
    """

    sampler: str = "ddpm"
    teacher_steps: int = 8
    temperature: float = 0.1
    denoise_weight: float = 1.0


@dataclass(frozen=True)
class RoundingConfig:
    """How the last state becomes words (`model/contextual.py`, `objectives/contextual.py`).

    Attributes:
        kind: `factorized`, Diffusion-LM's per-position p(w_i | x_i) (the argmax of the
            denoiser's word logits), or `contextual`: a small causal decoder
            p(w_i | w_<i, memory) that reads the denoiser's hidden states at a low-noise
            point x_{t_d} and writes left to right, trained jointly with the denoiser.
        layers: decoder blocks.
        hidden: decoder width (0: model.hidden).
        t_min, t_max: training draws t_d ~ U[t_min, t_max].
        t_sample: t_d at sampling: the sampler's final x̂0 is noised to it and read. A noisier
            reading leans more on the decoder's context (more fluent, less literal).
        t_constrained: t_d when a classifier guides the latent: a nearly clean reading, so
            that the decoder writes what guidance put there. Constraints that fix words read
            at t_sample: the decoder is held to those words itself.
        weight: weight of the decoder's cross-entropy in the training loss.
        best_of: samples drawn for each one returned: the one whose words the decoder finds
            most probable is kept (k times the sampling cost; `Pipeline.generate`).
        reads: readings of each sample's final x̂0, each noised to t_d afresh: the one whose
            words the decoder finds most probable is kept (R memory evaluations and decoder
            passes instead of one; `sampling/contextual.py`). Like t_sample, it is a setting of
            the decoder's reading, unused without one.
        discrete: masked and uniform runs (model.kind) carry the decoder too, reading the token
            network's hidden states at a row noised to t_d by their own forward process. Off by
            default, so that their runs saved before it load as they were.

    Rounding applies to the diffusion denoiser (model.kind=diffusion, model.generator=diffusion),
    and with `discrete` to the masked and uniform networks: the AR LM and the one/few-step
    generators keep their own readout whatever `kind` says.
    """

    kind: str = "contextual"
    layers: int = 2
    hidden: int = 0
    t_min: float = 0.0
    t_max: float = 0.6
    t_sample: float = 0.4
    t_constrained: float = 0.2
    weight: float = 1.0
    best_of: int = 1
    reads: int = 1
    discrete: bool = False


ROUNDINGS = ("factorized", "contextual")


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    shortcut: ShortcutConfig = field(default_factory=ShortcutConfig)
    meanflow: MeanFlowConfig = field(default_factory=MeanFlowConfig)
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    rounding: RoundingConfig = field(default_factory=RoundingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Config:
        """Build a config, rejecting unknown sections and keys by name."""
        if not isinstance(raw, dict):
            raise ValueError(f"config must be a mapping, got {type(raw).__name__}")
        sections = {f.name: f.default_factory for f in dataclasses.fields(cls)}
        unknown = set(raw) - set(sections)
        if unknown:
            raise ValueError(f"unknown config section(s) {sorted(unknown)}; valid: {sorted(sections)}")
        parts: dict[str, Any] = {}
        for name, section_cls in sections.items():
            assert isinstance(section_cls, type)  # each section's default_factory is its dataclass
            values = raw.get(name) or {}
            if not isinstance(values, dict):
                raise ValueError(f"config section '{name}' must be a mapping")
            parts[name] = _build_section(section_cls, name, values)
        config = cls(**parts)
        config.validate()
        return config

    def with_overrides(self, assignments: list[str]) -> Config:
        """Apply `section.key=value` strings; values are parsed as YAML scalars."""
        raw = self.to_dict()
        for item in assignments:
            key, sep, value = item.partition("=")
            parts = key.strip().split(".")
            if not sep or len(parts) != 2:
                raise ValueError(f"bad override '{item}': expected section.key=value, e.g. train.steps=2000")
            section, name = parts
            if section not in raw or name not in raw[section]:
                raise ValueError(f"unknown config key '{key}'")
            raw[section][name] = yaml.safe_load(value)
        return Config.from_dict(raw)

    def validate(self) -> None:
        """Refuse values that would fail later with a less clear message."""
        checks = [
            (self.data.max_len >= 3, f"data.max_len must be ≥ 3, got {self.data.max_len}"),
            (
                self.data.overlong in ("truncate", "skip", "refuse"),
                f"data.overlong must be truncate, skip or refuse, got '{self.data.overlong}'",
            ),
            _one_of("model.kind", self.model.kind, MODEL_KINDS),
            (
                self.model.predict in ("x0", "eps", "v", "logits"),
                f"model.predict must be x0, eps, v or logits, got '{self.model.predict}'",
            ),
            (
                self.model.hidden >= 1 and self.model.heads >= 1,
                f"model.hidden and model.heads must be ≥ 1, got {self.model.hidden} and {self.model.heads}",
            ),
            (
                self.model.hidden % max(self.model.heads, 1) == 0,
                f"model.hidden ({self.model.hidden}) must be divisible by model.heads ({self.model.heads})",
            ),
            (self.model.embed_dim >= 1 and self.model.layers >= 1, "model.embed_dim and model.layers must be ≥ 1"),
            (self.diffusion.steps >= 2, f"diffusion.steps must be ≥ 2, got {self.diffusion.steps}"),
            (0.0 <= self.diffusion.self_cond_prob <= 1.0, "diffusion.self_cond_prob must be in [0, 1]"),
            (0.0 <= self.diffusion.self_cond_gap <= 1.0, "diffusion.self_cond_gap must be in [0, 1]"),
            _one_of("model.condition", self.model.condition, CONDITIONS),
            (self.data.source_len >= 3, f"data.source_len must be ≥ 3, got {self.data.source_len}"),
            (
                not self.data.delexicalise or self.model.condition == "source",
                "data.delexicalise needs model.condition=source (it rewrites the source and the sentence)",
            ),
            (
                self.model.condition != "source" or not self.diffusion.sweep,
                "model.condition=source does not combine with diffusion.sweep (the source has no time of its own)",
            ),
            (
                0.0 <= self.diffusion.cond_drop <= 1.0,
                f"diffusion.cond_drop must be in [0, 1], got {self.diffusion.cond_drop}",
            ),
            (self.train.steps >= 1 and self.train.batch_size >= 1, "train.steps and train.batch_size must be ≥ 1"),
            (self.train.lr > 0, f"train.lr must be > 0, got {self.train.lr}"),
            (0.0 <= self.train.ema_decay < 1.0, "train.ema_decay must be in [0, 1)"),
            (self.train.length_pool >= 0, f"train.length_pool must be ≥ 0, got {self.train.length_pool}"),
            (self.train.patience >= 0, f"train.patience must be ≥ 0, got {self.train.patience}"),
            (
                not self.diffusion.length_anchors or self.model.generator == "diffusion",
                f"diffusion.length_anchors needs model.generator=diffusion, got {self.model.generator}",
            ),
            (0.0 <= self.diffusion.sweep <= 1.0, f"diffusion.sweep must be in [0, 1], got {self.diffusion.sweep}"),
            (self.diffusion.sweep_lag > 0, f"diffusion.sweep_lag must be > 0, got {self.diffusion.sweep_lag}"),
            _one_of("diffusion.uniform_loss", self.diffusion.uniform_loss, UNIFORM_LOSSES),
            (
                not self.diffusion.sweep or self.model.kind == "diffusion",
                f"diffusion.sweep needs model.kind=diffusion (a time per position), got {self.model.kind}",
            ),
            (
                self.model.kind not in TOKEN_KINDS or self.model.generator == "diffusion",
                f"model.kind={self.model.kind} has its own samplers: model.generator={self.model.generator} "
                "does not apply",
            ),
            (
                not self.diffusion.sweep or self.model.generator == "diffusion",
                f"diffusion.sweep needs model.generator=diffusion, got {self.model.generator}",
            ),
            (
                not self.train.length_pool or self.model.kind == "autoregressive" or self.diffusion.length_anchors,
                "train.length_pool cuts the PAD tail a denoiser would learn: set diffusion.length_anchors=true",
            ),
        ]
        for ok, message in checks + self._generator_checks() + self._rounding_checks():
            if not ok:
                raise ValueError(message)

    @property
    def contextual_rounding(self) -> bool:
        """Whether the run's network carries a contextual rounding decoder (`RoundingConfig`)."""
        m, r = self.model, self.rounding
        tokens = m.kind in TOKEN_KINDS and r.discrete
        return r.kind == "contextual" and (tokens or (m.kind == "diffusion" and m.generator == "diffusion"))

    def _rounding_checks(self) -> list[tuple[bool, str]]:
        r = self.rounding
        return [
            _one_of("rounding.kind", r.kind, ROUNDINGS),
            (r.layers >= 1 and r.hidden >= 0 and r.weight >= 0, "rounding.layers must be ≥ 1, hidden and weight ≥ 0"),
            (
                r.hidden == 0 or r.hidden % self.model.heads == 0,
                f"rounding.hidden ({r.hidden}) must be divisible by model.heads ({self.model.heads})",
            ),
            (
                0.0 <= r.t_min <= r.t_max <= 1.0 and 0.0 <= r.t_sample <= 1.0 and 0.0 <= r.t_constrained <= 1.0,
                "rounding needs 0 ≤ t_min ≤ t_max ≤ 1 and t_sample, t_constrained in [0, 1]",
            ),
            (
                r.best_of >= 1 and (r.best_of == 1 or r.kind == "contextual"),
                f"rounding.best_of must be ≥ 1, and > 1 only with rounding.kind=contextual, got {r.best_of}",
            ),
            (r.reads >= 1, f"rounding.reads must be ≥ 1, got {r.reads}"),
            (
                not r.discrete or (r.kind == "contextual" and self.model.kind in TOKEN_KINDS),
                "rounding.discrete gives a masked or uniform run the contextual decoder: it needs "
                f"rounding.kind=contextual and model.kind masked or uniform, got {r.kind} and {self.model.kind}",
            ),
        ]

    def _generator_checks(self) -> list[tuple[bool, str]]:
        """The one/few-step generators: what they need of the model and their own settings."""
        g, m = self.model.generator, self.model
        sc, mf, cm, dc = self.shortcut, self.meanflow, self.consistency, self.distill
        if g not in GENERATORS:
            return [_one_of("model.generator", g, GENERATORS)]
        checks = [
            (
                not self.train.teacher or g in ("consistency", "distilled"),
                f"train.teacher is only used by model.generator=consistency or distilled (got model.generator={g})",
            ),
            (
                g != "distilled" or bool(self.train.teacher),
                "model.generator=distilled needs train.teacher, the diffusion run whose sampler it learns",
            ),
            _one_of("distill.sampler", dc.sampler, TEACHER_SAMPLERS),
            (dc.teacher_steps >= 1, f"distill.teacher_steps must be ≥ 1, got {dc.teacher_steps}"),
            (
                dc.temperature >= 0 and dc.denoise_weight >= 0,
                "distill.temperature and distill.denoise_weight must be ≥ 0",
            ),
            (0 <= sc.levels <= 10, f"shortcut.levels must be in [0, 10], got {sc.levels}"),
            (0.0 <= sc.bootstrap_share <= 1.0, "shortcut.bootstrap_share must be in [0, 1]"),
            (0.0 <= mf.jump_share <= 1.0, "meanflow.jump_share must be in [0, 1]"),
            (
                mf.time_std > 0 and mf.weight_eps > 0 and mf.power >= 0,
                "meanflow.time_std and meanflow.weight_eps must be > 0, meanflow.power ≥ 0",
            ),
            (cm.num_scales >= 2, f"consistency.num_scales must be ≥ 2, got {cm.num_scales}"),
            (cm.denoise_weight >= 0, f"consistency.denoise_weight must be ≥ 0, got {cm.denoise_weight}"),
        ]
        if g != "diffusion":  # the x0-adapter reads x̂0 from word logits; no second pass
            checks += [
                (m.kind == "diffusion", f"model.generator={g} needs model.kind=diffusion"),
                (m.predict == "logits", f"model.generator={g} needs model.predict=logits, got '{m.predict}'"),
                (not m.self_condition, f"model.generator={g} does not support model.self_condition"),
                (
                    m.condition == "none",
                    f"model.generator={g} does not support model.condition (classifier-free guidance)",
                ),
            ]
        return checks

    def save(self, path: str | Path) -> None:
        from difflm.checkpoint import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load_run(cls, run_dir: str | Path) -> Config:
        """The config saved in a run directory (RUN/config.json).

        A run saves every key, so a key it lacks is newer than the run: it takes the value
        that reproduces the old behaviour (`RUN_DEFAULTS`), not today's default.
        """
        from difflm.checkpoint import read_json

        raw = read_json(Path(run_dir) / "config.json")
        if isinstance(raw, dict):
            for (section, key), value in RUN_DEFAULTS.items():
                raw.setdefault(section, {})
                if isinstance(raw[section], dict):
                    raw[section].setdefault(key, value)
            for (section, key), value in REMOVED_KEYS.items():
                # A removed option set to what every run now does is dropped; any other value
                # stays and is refused by name: this version cannot reproduce that run.
                if isinstance(raw.get(section), dict) and raw[section].get(key, object()) == value:
                    del raw[section][key]
        return cls.from_dict(raw)


#: Values of keys added after runs were saved without them: the behaviour those runs had.
RUN_DEFAULTS: dict[tuple[str, str], Any] = {("model", "posterior_input"): False, ("rounding", "kind"): "factorized"}
#: Keys that were removed, with the value that means today's behaviour.
REMOVED_KEYS: dict[tuple[str, str], Any] = {("diffusion", "time_sampling"): "uniform"}


def _build_section(section_cls: type, section: str, values: dict[str, Any]) -> Any:
    defaults = dataclasses.asdict(section_cls())
    unknown = set(values) - set(defaults)
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} in config section '{section}'; valid: {sorted(defaults)}")
    typed = {name: _coerce(value, type(defaults[name]), f"{section}.{name}") for name, value in values.items()}
    return section_cls(**typed)


def _one_of(key: str, value: str, choices: tuple[str, ...]) -> tuple[bool, str]:
    """The check that `key` is one of `choices`, for `Config.validate`."""
    return value in choices, f"{key} must be one of {', '.join(choices)}, got '{value}'"


def _coerce(value: Any, kind: type, key: str) -> Any:
    """Check a value against its field's type; ints and numeric strings are accepted for floats."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):  # YAML 1.1 reads "3e-3" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"config key {key} expects {kind.__name__}, got {value!r}")
    return value


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML or JSON config file (None = defaults) and apply `--set` overrides."""
    if path is None:
        config = Config()
    else:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot parse config {path}: {str(err).splitlines()[0]}") from None
        config = Config.from_dict(raw)
    return config.with_overrides(overrides or [])
