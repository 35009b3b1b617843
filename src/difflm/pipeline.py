"""Load a trained run and sample from it: `difflm.load(RUN).sample(...)`.

`Pipeline.generate` is the one way of sampling a diffusion run: `difflm sample`,
`difflm control`, the demo and the benches all call it. It owns the seed, the shape, each
row's length (a run with length anchors), the denoiser wrappers (length anchors,
classifier-free guidance, self-conditioning guidance, gradient guidance with its
constraints) and the evaluation count. It also runs a discrete run's samplers on a canvas
(`_unmask`), and CGMH, FUDGE, conditioned sampling and beam search on an autoregressive run
(`_cgmh`, `_fudge`, `_conditioned`), so every constrained generation goes through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from difflm import hub
from difflm.config import ROUNDINGS, Config
from difflm.control.classifier_constraints import (
    CLASSIFIER_GUIDANCE_STEPS,
    CLASSIFIER_TEMPERATURE,
    ClassifierConstraint,
)
from difflm.control.classifier_free import ClassifierFreeGuidance, condition_of
from difflm.control.constraints import FixesLength, Infill, Keywords, Length, RequiresWords, RestrictsWords
from difflm.control.discrete import GuidedTokenNetwork, check_token_classifiers
from difflm.control.guidance import Constraint, GradientGuidance
from difflm.eval.data_to_text import mbr_pick
from difflm.model.anchors import anchor_ids, draw_lengths, tail, width_groups
from difflm.model.autoregressive import CausalLM
from difflm.model.denoiser import Denoiser
from difflm.model.tokens import TokenDenoiser
from difflm.run import Network, load_run
from difflm.sampling import DEFAULT_SAMPLER, DEFAULT_STEPS, TOKEN_DEFAULTS, TOKEN_SAMPLERS, get_sampler
from difflm.sampling.anchors import AnchoredDenoiser
from difflm.sampling.autoguidance import SC_GUIDANCE, SelfConditioningGuidance, check_scale
from difflm.sampling.base import Callback, SampleOutput
from difflm.sampling.beam import BEAMS, beam_search
from difflm.sampling.cgmh import BLANK, Chain, Propose, cgmh, chain_rows
from difflm.sampling.contextual import most_probable, require_decoder, round_in_context
from difflm.sampling.fudge import FUDGE_TOP_K, fudge
from difflm.sampling.rounding import SAMPLING_TEMPERATURE
from difflm.sampling.tokens import StepReport, TokenNetwork, open_until, place_words
from difflm.sampling.uniform import prior
from difflm.sampling.wrappers import CountedDenoiser, DenoiserWrapper
from difflm.text.corpora import source_tokens
from difflm.text.delex import delex_slots, delexicalise, open_values, placeholder_errors, relexicalise
from difflm.text.slots import SlotLabels
from difflm.text.vocab import Vocab

Condition = Mapping[str, str] | Iterable[str] | str

#: The options of each autoregressive sampler, beyond steps, seed, temperature and constraints.
AR_OPTIONS = {"cgmh": ("anneal", "proposals"), "fudge": ("top_k",), "beam": ("beams",)}


class Pipeline:
    """A trained run ready to sample: a diffusion LM, or the autoregressive LM.

    Attributes:
        config: the run's config.
        vocab: its vocabulary.
        model: the (EMA) denoiser or causal LM, in eval mode.
        conditions: the slot=value labels of a run trained with model.condition=slots
            (classifier-free guidance), else None.
    """

    def __init__(self, config: Config, vocab: Vocab, model: Network, conditions: SlotLabels | None = None) -> None:
        self.config = config
        self.vocab = vocab
        self.model = model.eval()
        self.conditions = conditions

    @classmethod
    def from_run(cls, run_dir: str | Path, *, weights: str = "ema", device: str = "auto") -> Pipeline:
        """Load `config.json`, `vocab.json` and `{weights}.safetensors` from a run directory, a
        saved model's directory or a Hugging Face Hub id ("owner/name[@revision]", `hub.resolve`)."""
        run = load_run(hub.resolve(run_dir), weights=weights, device=device)
        return cls(run.config, run.vocab, run.model, run.conditions)

    def save_pretrained(self, directory: str | Path, *, card: Mapping[str, Any] | None = None) -> Path:
        """Save this model in the layout of a Hugging Face model repository (`hub.save_pretrained`):
        `difflm.load(directory)` loads it, and the directory can be uploaded as it is. `card`
        adds sections (title -> text) to its README.md model card."""
        return hub.save_pretrained(directory, self.config, self.vocab, self.model, self.conditions, card)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def is_autoregressive(self) -> bool:
        return isinstance(self.model, CausalLM)

    @property
    def default_sampler(self) -> str:
        """The sampler of unconstrained sampling: the kind's own on a discrete run (`TOKEN_DEFAULTS`),
        "autoregressive" (left to right) on an autoregressive run, "sweep" on a run trained with
        left-to-right noise (it writes the left words first, as it learned), else
        `DEFAULT_SAMPLER` (also under constraints, which guide at a shared time)."""
        if isinstance(self.model, TokenDenoiser):
            return TOKEN_DEFAULTS[self.model.noise][0]
        if isinstance(self.model, CausalLM):
            return "autoregressive"
        return "sweep" if isinstance(self.model, Denoiser) and self.model.sweep_lag else DEFAULT_SAMPLER

    def _generator(self, seed: int | None) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        return generator

    def generate(
        self,
        n: int,
        *,
        sampler: str | None = None,
        steps: int = DEFAULT_STEPS,
        seed: int | None = 0,
        length: int | None = None,
        temperature: float | None = None,
        sc_guidance: float | None = None,
        constraints: Sequence[Constraint] = (),
        condition: Condition | None = None,
        source: str | Sequence[str] | None = None,
        cfg_scale: float = 1.0,
        guidance: Mapping[str, Any] | None = None,
        rounding: str | None = None,
        best_of: int | None = None,
        reads: int | None = None,
        **options: Any,
    ) -> SampleOutput:
        """Run a diffusion sampler for n sentences of `length` positions (default: the model's L).

        One generator, seeded by `seed`, drives x_T, every sampler step's noise and the
        constraints' overwrite hooks, so a seed reproduces the whole run.

        Args:
            n: number of sentences.
            sampler, steps: a registered sampler (of `TOKEN_SAMPLERS` on a discrete run) and its
                number of steps K; None: `default_sampler`.
            seed: None draws a fresh seed.
            length: positions per sentence (default data.max_len; a run with length anchors
                draws each row's word count, at most length − 2).
            temperature: x̂0 = softmax(logits/τ)·EMB (`difflm.sampling.rounding`); None:
                `SAMPLING_TEMPERATURE`, or `CLASSIFIER_TEMPERATURE` (1) under classifier
                constraints; 1 follows the model exactly.
            sc_guidance: w ≠ 1 guides a self-conditioned run away from its own prediction
                without the self-conditioning input (`difflm.sampling.autoguidance`). None:
                `SC_GUIDANCE` on a self-conditioned run without classifier constraints, else 1 (off).
            constraints: gradient guidance (Diffusion-LM §5) towards Σ_c w_c·log p(c | x).
            condition: slot values for classifier-free guidance, {"food": "Italian"},
                ["food=Italian"] or "food=Italian"; needs a run trained with
                model.condition=slots. The constraints then read the guided prediction.
            source: the text to write from, on a run trained with model.condition=source
                (data-to-text): a linearised MR "name : Aromi | food : Chinese", an official
                one "name[Aromi], food[Chinese]", or any text (`source_ids`); or a list of n
                texts, one per row. Under data.delexicalise the tokens hold the names'
                placeholders; `sample` and `write_from` put the names back.
            cfg_scale: w ≥ 0 of classifier-free guidance (0 unconditional, 1 conditional),
                towards the condition or the source.
            guidance: settings of `GradientGuidance` (steps, step_size, optimizer,
                fluency_weight, active); unset ones take its defaults, except steps under
                classifier constraints (`CLASSIFIER_GUIDANCE_STEPS`).
            rounding: how the last state becomes words: "contextual" (the run's decoder,
                `difflm.sampling.contextual`) or "factorized" (the per-position argmax);
                None: the run's `rounding.kind`.
            best_of: k ≥ 1: draw k samples for each of the n and keep the one whose words the
                contextual decoder finds most probable (mean log-probability per word); k times
                the cost, counted in nfe. None: the run's `rounding.best_of`, or 1 under
                classifier constraints.
            reads: R ≥ 1: read each sample's final x̂0 R times, each noised to t_d afresh, and
                keep the reading the decoder finds most probable (`sampling.contextual`); R
                memory evaluations instead of one, counted in nfe. None: the run's
                `rounding.reads`.
            **options: further sampler options (eta, grid, clamp_from, refine_from, ...).

        Returns:
            The sampler's output, the known positions' tokens fixed, and nfe the network
            evaluations per sample (every guidance's included).

        Raises:
            ValueError: an autoregressive run asked for anything but CGMH (`_cgmh`: steps,
                seed, temperature, constraints, the options anneal and proposals), FUDGE (`_fudge`: seed,
                temperature, constraints, the option top_k) or conditioned sampling or beam
                search (`_conditioned`: a condition, seed, temperature; the option beams),
                n < 1, or a bad option (named).
        """
        if n < 1:
            raise ValueError(f"n must be ≥ 1, got {n}")
        c = self._condition(condition, source, n)
        if self.is_autoregressive:
            own = {key: options.pop(key) for key in AR_OPTIONS.get(sampler or "", ()) if key in options}
            _refuse_options(
                "do not apply to this autoregressive sampler",
                sc_guidance=sc_guidance,
                guidance=guidance,
                rounding=rounding,
                length=length,
                best_of=best_of,
                reads=reads,
                **options,
            )
            tau = 1.0 if temperature is None else temperature
            if sampler == "cgmh" and c is None:
                anneal = bool(own.get("anneal", False))
                return self._cgmh(n, steps, seed, tau, constraints, anneal, own.get("proposals"))
            if sampler == "fudge" and c is None:
                return self._fudge(n, seed, tau, constraints, own.get("top_k", FUDGE_TOP_K))
            if not constraints and (sampler == "beam" or (sampler is None and c is not None)):
                if c is not None and cfg_scale != 1.0:
                    raise ValueError("an autoregressive run samples from p(x | c) itself: cfg_scale must be 1")
                return self._conditioned(n, sampler, seed, tau, c, own.get("beams", max(n, BEAMS)))
            raise ValueError(
                "this run is an autoregressive LM: use sample(), sampler='cgmh' or 'fudge' to generate under "
                "constraints, or a condition or source alone (a run trained with model.condition=slots or "
                "source), sampled or with sampler='beam'"
            )
        if sampler in AR_OPTIONS:
            kind = self.model.noise if isinstance(self.model, TokenDenoiser) else "continuous diffusion"
            raise ValueError(f"the {sampler} sampler runs on an autoregressive run; this is a {kind} run")
        if c is None and cfg_scale != 1.0:
            raise ValueError(f"cfg_scale={cfg_scale!r} needs a condition (slot values) or a source to guide towards")
        rounding = rounding or ("contextual" if self.config.contextual_rounding else "factorized")
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be {' or '.join(ROUNDINGS)}, got {rounding!r}")
        if rounding == "contextual":
            assert isinstance(self.model, (Denoiser, TokenDenoiser))  # an autoregressive run returned above
            require_decoder(self.model)
        # The decoder reads the last state `reads` times at t_d: t_constrained, nearly clean, under
        # a classifier's guidance, so as to write what the guidance put there; t_sample otherwise,
        # as the words other constraints fix are forced in the decoder itself.
        classified = any(isinstance(c, ClassifierConstraint) for c in constraints)
        factorized = rounding != "contextual"
        if reads is None:
            reads = 1 if factorized else self.config.rounding.reads
        reads = _check_reading("reads", reads, rounding)
        t_d = self.config.rounding.t_constrained if classified else self.config.rounding.t_sample
        if isinstance(self.model, TokenDenoiser):
            callback = options.pop("callback", None)
            _refuse_options(
                f"apply to continuous runs, not {self.model.noise} ones",
                sc_guidance=sc_guidance,
                guidance=guidance,
                best_of=best_of,
                **options,
            )
            network = TokenNetwork(self.model, c, cfg_scale)
            read = None if c is None or cfg_scale == 0 else c.expand(n, -1)  # the memory of the guided branch
            return self._unmask(
                n,
                sampler or self.default_sampler,
                steps,
                seed,
                length,
                temperature,
                constraints,
                network,
                callback,
                reads=0 if factorized else reads,
                t_d=t_d,
                read=read,
            )
        if guidance and not constraints:
            raise ValueError(f"gradient guidance settings ({', '.join(sorted(guidance))}) need a constraint")
        model = self.model
        assert isinstance(model, Denoiser)
        sampler = sampler or (DEFAULT_SAMPLER if constraints else self.default_sampler)
        # Under a classifier's guidance self-conditioning guidance and best_of are off by
        # default: the first's extrapolation away from the draft undoes the classifier's push,
        # and the decoder's most probable draw is the most typical one, not the one most on
        # target (docs/benchmarks.md, "Controllable generation", "Best of k draws"). Reads stay
        # on: they keep the latent the classifier steered, and with the guidance's defaults they
        # raise every classifier task measured ("Several readings of each latent").
        # A run's best_of and reads are off when it is read without its decoder.
        k = best_of if best_of is not None else 1 if classified or factorized else self.config.rounding.best_of
        k = _check_reading("best_of", k, rounding)
        rows = n * k  # drawn, of which n are kept
        if c is not None and c.dim() == 2:  # one source per row: each row's k draws read it
            c = c.repeat_interleave(k, 0)
        counted = CountedDenoiser(model)
        denoiser: Denoiser | DenoiserWrapper = counted
        generator = self._generator(seed)
        shape = (rows, length or self.config.data.max_len, self.config.model.embed_dim)
        anchors = None
        if model.lengths is not None:  # a run with length anchors writes n ~ p_data(n) words, or the n fixed
            anchors = tail(self._words(rows, constraints, shape[1], generator), shape[1])
            denoiser = AnchoredDenoiser(denoiser, anchors)
        if c is not None:
            denoiser = ClassifierFreeGuidance(denoiser, c, cfg_scale)
        if sc_guidance is None:
            sc_guidance = SC_GUIDANCE if model.self_conditioning and not classified else 1.0
        if check_scale(sc_guidance) != 1.0:
            denoiser = SelfConditioningGuidance(denoiser, sc_guidance)
        if classified:
            guidance = {"steps": CLASSIFIER_GUIDANCE_STEPS, **(guidance or {})}
        gradient = (
            GradientGuidance(denoiser, constraints, generator=generator, **(guidance or {})) if constraints else None
        )
        if temperature is None:
            temperature = CLASSIFIER_TEMPERATURE if classified else SAMPLING_TEMPERATURE
        if sampler == "sweep" and anchors is not None:  # the sweep runs over each row's words, to its END
            options.setdefault("span", (~anchors).sum(1))
        output = get_sampler(sampler)(
            denoiser, shape, steps=steps, generator=generator, guidance=gradient, temperature=temperature, **options
        )
        if gradient is not None:
            output = gradient.finalize(output)
        if rounding == "contextual":
            read = None if c is None or cfg_scale == 0 else c.expand(rows, -1)  # the memory of the guided branch
            tokens, log_prob = self._round_in_context(output.x0, constraints, read, anchors, generator, reads, t_d)
            output = replace(output, tokens=tokens)
            counted.rows += rows * reads * (2 if model.self_conditioning else 1)  # the memory's readings of x_{t_d}
            if k > 1:
                best = most_probable(log_prob, k)
                trajectory = [x[best] for x in output.trajectory]
                output = replace(output, x0=output.x0[best], tokens=tokens[best], trajectory=trajectory)
        elif anchors is not None:
            output = replace(output, tokens=torch.where(anchors, anchor_ids(anchors), output.tokens))
        return replace(output, nfe=counted.per_sample(n))

    def _unmask(
        self,
        n: int,
        sampler: str,
        steps: int,
        seed: int | None,
        length: int | None,
        temperature: float | None,
        constraints: Sequence[Constraint],
        network: TokenNetwork,
        callback: Callback | None = None,
        *,
        reads: int = 0,
        t_d: float = 0.0,
        read: torch.Tensor | None = None,
    ) -> SampleOutput:
        """Discrete diffusion (`sampling/tokens.py`): a canvas of blanks with START, the length
        anchors and the constraints' given words fixed, written by `sampler` calling `network`
        (the model, guided towards a condition or not, and by the classifier constraints,
        `control/discrete.py`); under anchors one length at a time, each group cut after its
        END, as training saw the rows. `callback` sees each call (`StepReport`). With reads
        R ≥ 1 the run's contextual decoder then writes the words from R readings of the rows at
        t_d (`sampling.contextual.round_in_context`), its memory read under the condition `read`."""
        model = self.model
        assert isinstance(model, TokenDenoiser)
        samplers = TOKEN_SAMPLERS[model.noise]
        if sampler not in samplers:
            raise ValueError(f"unknown {model.noise} sampler {sampler!r}; valid choices: {', '.join(sorted(samplers))}")
        _check_steerable(
            constraints,
            (ClassifierConstraint, RestrictsWords, RequiresWords),
            f"a {model.noise} run",
            "constraints that fix words (length, infilling, keywords) and classifier constraints",
        )
        L, V = length or self.config.data.max_len, len(self.vocab)
        classified = [c for c in constraints if isinstance(c, ClassifierConstraint)]
        if classified:  # first-order discrete guidance by classifiers of the noised rows
            check_token_classifiers(classified, V + 1, model.noise)
        generator = self._generator(seed)
        allowed, required = self._fixed_words(constraints, L)
        canvas = torch.full((n, L), model.mask_id, dtype=torch.long, device=self.device)
        canvas[:, 0] = Vocab.START_ID
        if allowed is not None:
            if not allowed.any(-1).all():
                raise ValueError("the constraints leave some position no word to take")
            known = allowed.sum(-1) == 1  # a position with one word left: fixed, never masked
            canvas[:, known] = allowed[known].long().argmax(-1)
        groups = [(torch.arange(n, device=self.device), L)]
        if model.lengths is not None:
            anchors = tail(self._words(n, constraints, L, generator), L)
            canvas = torch.where(anchors, anchor_ids(anchors), canvas)
            groups = width_groups(anchors)
        tokens, calls = canvas.clone(), 0
        report = None if callback is None else StepReport(callback, canvas, model.mask_id)
        for group, width in groups:
            rows = network.rows(group)
            call = GuidedTokenNetwork(rows, classified, V + 1, n) if classified else rows
            start = canvas[group, :width]
            within = None if allowed is None else allowed[:width]
            if required is not None:  # each keyword fixed where the row at t = 1 wants it most (one more call)
                noised = prior(start, model.mask_id, V, generator) if model.noise == "uniform" else None
                placed = place_words(call, start, required, model.mask_id, noised)
                calls += len(group) * call.rows_per_call
                if model.lengths is None:  # no END is fixed yet: none may be written before a row's last keyword
                    within = open_until(within, placed, start, model.mask_id, V)
                start = placed
            watched: Callable[[torch.Tensor, float], torch.Tensor] = call
            if report is not None:  # under uniform noise only the fixed words are the row's own
                watched = report.watch(call, group, None if model.noise == "masked" else start != model.mask_id)
            written, used = samplers[sampler](
                watched,
                start,
                mask_id=model.mask_id,
                steps=steps,
                generator=generator,
                allowed=within,
                temperature=TOKEN_DEFAULTS[model.noise][1] if temperature is None else temperature,
            )
            tokens[group, :width] = written
            if report is not None:
                report.written(group, written)
            calls += used * len(group) * call.rows_per_call
        if reads:
            tokens, _ = round_in_context(
                model, tokens, t_d=t_d, generator=generator, allowed=allowed, required=required, cond=read, reads=reads
            )
            calls += n * reads  # the memory's readings of z_{t_d}
        return self._words_output(tokens, nfe=round(calls / n))

    def _words_output(self, tokens: torch.Tensor, nfe: int) -> SampleOutput:
        """The output of a sampler that writes words, not vectors (discrete runs, the AR run):
        its x0 is the one-hot rows, the clean end of a discrete process."""
        return SampleOutput(x0=torch.nn.functional.one_hot(tokens, len(self.vocab)).float(), tokens=tokens, nfe=nfe)

    def _condition(
        self, condition: Condition | None, source: str | Sequence[str] | None, n: int
    ) -> torch.Tensor | None:
        """What a conditioned run is conditioned on: the multi-hot [P] of slot values (`condition_of`)
        or the source ids [S] (`source_ids`), or [n, S] for a list of n sources; None for neither."""
        if source is None:
            return None if condition is None else condition_of(self.conditions, condition, self.device)
        if condition is not None:
            raise ValueError("give slot values (condition) or a source, not both")
        if isinstance(source, str):
            return self.source_ids(source)
        if len(source) != n:
            raise ValueError(f"a list of sources gives one per row: {len(source)} sources for n = {n} rows")
        return torch.stack([self.source_ids(text) for text in source])

    def source_ids(self, source: str) -> torch.Tensor:
        """A source text as the ids [S] a source-conditioned run reads (START s… END PAD…; words
        out of the vocabulary become UNK, a longer source is cut to data.source_len; its
        proper names are placeholders under data.delexicalise, `text/delex.py`).

        Raises:
            ValueError: the run was not trained with model.condition=source, or an empty source.
        """
        if self.config.model.condition != "source":
            raise ValueError(
                "this run was not trained on sources: writing from a source needs a run trained with "
                "--set model.condition=source"
            )
        tokens = source_tokens(source)
        if not tokens:
            raise ValueError("the source is empty")
        if self.config.data.delexicalise:
            tokens = delexicalise(tokens, open_values(tokens, delex_slots(self.config.data.delex_slots)))
        ids, _ = self.vocab.encode_batch([tokens], self.config.data.source_len, overlong="truncate")
        return ids[0].to(self.device)

    def _conditioned(
        self, n: int, sampler: str | None, seed: int | None, temperature: float, c: torch.Tensor | None, beams: int
    ) -> SampleOutput:
        """Diffusion-LM's FT baselines: a conditioned autoregressive run samples left to right
        given the slot values or the source c (FT-sample; data-to-text), or returns its n most
        likely sentences by beam search (sampler "beam": FT-search, greedy with beams=1;
        unconditioned too). One LM call per position, counted as nfe."""
        model = self.model
        assert isinstance(model, CausalLM)
        if sampler == "beam":
            if c is not None and c.dim() == 2:
                raise ValueError("beam search writes from one source (or condition) at a time")
            tokens, calls = beam_search(model, n, beams=beams, max_len=self.config.data.max_len, cond=c)
            return self._words_output(tokens, nfe=calls)
        tokens = model.generate(n, generator=self._generator(seed), temperature=temperature, cond=c)
        return self._words_output(tokens, nfe=_positions(tokens))

    def _fudge(
        self, n: int, seed: int | None, temperature: float, constraints: Sequence[Constraint], top_k: int
    ) -> SampleOutput:
        """FUDGE on an autoregressive run (`sampling/fudge.py`): the classifier constraints score
        the LM's top-k next words by their prefix classifiers (`difflm train-classifier AR_RUN`),
        and the constraints that fix words (length, infilling, POS's lexicon) bar the rest."""
        model = self.model
        assert isinstance(model, CausalLM)
        _check_steerable(
            constraints,
            (ClassifierConstraint, RestrictsWords),
            "FUDGE",
            "classifier constraints and constraints that fix words (length, infilling); keywords are Mentions "
            "(--mentions), by a words classifier",
        )
        L = self.config.data.max_len
        allowed, _ = self._fixed_words(constraints, L)
        tokens, _ = fudge(
            model,
            n,
            self._prefix_scores(constraints, n),
            mask_id=len(self.vocab),
            max_len=L,
            generator=self._generator(seed),
            temperature=temperature,
            top_k=top_k,
            allowed=allowed,
        )
        return self._words_output(tokens, nfe=_positions(tokens))

    def _prefix_scores(
        self, constraints: Sequence[Constraint], n: int
    ) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Σ_c w_c·log p(c | row) of the classifier constraints, by the autoregressive run's prefix
        classifiers (`difflm train-classifier AR_RUN`), for FUDGE's prefixes and CGMH's whole
        sentences: rows [N, L], their PAD and future positions masked as in training; a call
        on N rows counts N/n evaluations per sample. None without classifier constraints."""
        classified = [c for c in constraints if isinstance(c, ClassifierConstraint)]
        if not classified:
            return None
        mask_id = len(self.vocab)
        check_token_classifiers(classified, mask_id + 1, "autoregressive", prefixes=True)

        def score(rows: torch.Tensor) -> torch.Tensor:
            rows = rows.masked_fill(rows == Vocab.PAD_ID, mask_id)
            return torch.stack([c.weight * c.log_prob(rows, 0.0, evaluations=len(rows) / n) for c in classified]).sum(0)

        return score

    def _cgmh(
        self,
        n: int,
        steps: int,
        seed: int | None,
        temperature: float,
        constraints: Sequence[Constraint],
        anneal: bool,
        proposals: str | Path | Pipeline | None,
    ) -> SampleOutput:
        """CGMH on an autoregressive run (`sampling/cgmh.py`): n chains of `steps` Metropolis–Hastings
        steps under π ∝ [p_LM·exp(f)]^(1/T) (annealed when asked), f the classifier constraints'
        scores of the sentence (`_prefix_scores`). Keywords are protected words of the start; a
        fixed length (length, POS, tree) starts at that many words (the keywords, then the words
        of an LM sample) and only replaces; infilling starts from its template, the given words
        protected and the blanks filled from an LM sample. `proposals`, a masked diffusion run
        (or its pipeline) of the same vocabulary, proposes the words from both sides of the
        slot (`_blank_filler`), one more network call per step."""
        model = self.model
        assert isinstance(model, CausalLM)
        propose = None if proposals is None else self._blank_filler(proposals)
        _check_steerable(
            constraints,
            (Keywords, Length, Infill, ClassifierConstraint),
            "CGMH",
            "keywords, a length, infilling and classifier constraints",
        )
        templates = [c for c in constraints if isinstance(c, Infill)]
        if templates and (len(templates) > 1 or len(templates) != len(constraints)):
            raise ValueError("CGMH takes infilling alone (one template)")
        required = list(
            dict.fromkeys(w for c in constraints if isinstance(c, Keywords) for w in c.required_words().tolist())
        )
        L = self.config.data.max_len
        length = _fixed_length(constraints)
        if len(required) > (length or L - 2):
            raise ValueError(f"{len(required)} keywords do not fit {length or L - 2} words")
        generator = self._generator(seed)
        starts = []
        for row in model.generate(n, generator=generator).tolist():
            drawn = [w for w in row[1 : row.index(Vocab.END_ID)]] or [Vocab.UNK_ID]
            if length is not None and templates:
                given = templates[0].ids[1 : length + 1].tolist()
                known = templates[0].known[1 : length + 1].tolist()
                fill = iter(drawn * length)
                starts.append(Chain([w if k else next(fill) for w, k in zip(given, known)], known))
            elif length is not None:
                filler = (drawn * length)[: length - len(required)]
                starts.append(Chain(required + filler, [True] * len(required) + [False] * len(filler)))
            else:
                starts.append(
                    Chain(required, [True] * len(required)) if required else Chain(drawn, [False] * len(drawn))
                )
        chains, _ = cgmh(
            lambda rows: model(rows)[0],
            starts,
            steps=steps,
            max_len=L,
            generator=generator,
            temperature=temperature,
            fixed_length=length is not None,
            anneal=anneal,
            factor=self._prefix_scores(constraints, n),
            propose=propose,
        )
        calls = steps * (2 if propose else 1) + 1  # the LM sample of the start counted as one
        return self._words_output(chain_rows(chains, L, self.device), nfe=calls)

    def _blank_filler(self, proposals: str | Path | Pipeline) -> Propose:
        """CGMH's proposal model: a masked diffusion run's p(w_i | the row with a blank at i),
        its mask in the blank (`sampling.cgmh.BLANK`).

        Raises:
            ValueError: not a masked run, or another vocabulary.
        """
        other = proposals if isinstance(proposals, Pipeline) else Pipeline.from_run(proposals, device=str(self.device))
        masked = other.model
        if not isinstance(masked, TokenDenoiser) or masked.noise != "masked":
            raise ValueError(f"CGMH's proposals come from a masked diffusion run, got a {other.config.model.kind} run")
        if other.vocab != self.vocab:
            raise ValueError("the proposal run's vocabulary differs from this run's: train both on one corpus")

        def propose(rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
            rows = rows.masked_fill(rows == BLANK, masked.mask_id)
            width = int((rows != Vocab.PAD_ID).sum(1).max())  # the shared PAD tail cut, as training batches were
            return masked(rows[:, :width])[torch.arange(len(rows), device=rows.device), positions]

        return propose

    def _words(self, n: int, constraints: Sequence[Constraint], width: int, generator: torch.Generator) -> torch.Tensor:
        """The word count [n] of each row of a run with length anchors: the one the constraints
        fix, else drawn from the training sentences' (`model/anchors.py`)."""
        assert isinstance(self.model, (Denoiser, TokenDenoiser)) and self.model.lengths is not None
        fixed = _fixed_length(constraints)
        if fixed is not None:
            return torch.full((n,), fixed, dtype=torch.long, device=self.device)
        return draw_lengths(self.model.lengths, n, width - 2, generator)

    def _fixed_words(
        self, constraints: Sequence[Constraint], width: int | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """What the constraints say outright about words: the words each position may take
        ([L, V], every `RestrictsWords` at once, cut to `width` positions if given; None: any)
        and the words every row must contain (ids [K] of the `RequiresWords`; None: none)."""
        allowed, required = None, set()
        for constraint in constraints:
            if isinstance(constraint, RestrictsWords):
                given = constraint.allowed_words(len(self.vocab)).to(self.device)
                allowed = given if allowed is None else allowed & given
            if isinstance(constraint, RequiresWords):
                required |= set(constraint.required_words().tolist())
        words = torch.tensor(sorted(required), dtype=torch.long, device=self.device) if required else None
        return (None if allowed is None else allowed[:width]), words

    def _round_in_context(
        self,
        x0: torch.Tensor,
        constraints: Sequence[Constraint],
        cond: torch.Tensor | None,
        anchors: torch.Tensor | None,
        generator: torch.Generator,
        reads: int,
        t_d: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's words for the final x̂0 read at t_d, within what the constraints fix,
        reading the rows' length anchors [B, L] (a run with length anchors), the most probable of
        `reads` readings, and their mean log-probability (`sampling.contextual`)."""
        assert isinstance(self.model, Denoiser)
        allowed, required = self._fixed_words(constraints)
        return round_in_context(
            self.model,
            x0,
            t_d=t_d,
            generator=generator,
            allowed=allowed,
            required=required,
            cond=cond,
            anchors=anchors,
            reads=reads,
        )

    def write_from(
        self,
        sources: Sequence[str],
        *,
        mbr: int = 1,
        rerank: bool = False,
        batch: int = 128,
        seed: int | None = 0,
        **options: Any,
    ) -> list[str]:
        """Data-to-text: one sentence for each source, the minimum-Bayes-risk pick among `mbr`
        samples of it (`eval.data_to_text.mbr_pick`, as DiffuSeq selects; beam search: its
        `mbr` best hypotheses, the most likely first); `options` are `generate`'s.

        rerank (a run trained with data.delexicalise): first keep the candidates that write a
        placeholder for exactly the delexicalised slots their MR holds, or come nearest
        (`text.delex.placeholder_errors`; TGen's reranker by exact match), then pick.

        Raises:
            ValueError: mbr < 1, no source, rerank on a run without delexicalisation, or what
                `generate` raises.
        """
        ranked = options.get("sampler") == "beam"
        groups = self.candidates(sources, n=mbr, batch=batch, seed=seed, **options)
        return self.choose(groups, sources, rerank=rerank, ranked=ranked)

    def candidates(
        self, sources: Sequence[str], *, n: int = 1, batch: int = 128, seed: int | None = 0, **options: Any
    ) -> list[list[str]]:
        """n sentences written from each source, placeholders as written (`choose` puts the names
        back); sampled `batch` rows at a time, or by beam search (sampler "beam") one source at a
        time, its n best hypotheses, best first.

        Raises:
            ValueError: n < 1, no source, or what `generate` raises.
        """
        if n < 1 or not sources:
            raise ValueError(f"need mbr ≥ 1 and at least one source, got mbr={n}, {len(sources)} sources")
        if options.get("sampler") == "beam":  # generate's beams default to max(n, BEAMS)
            return [self.decode(self.generate(n, seed=seed, source=text, **options).tokens) for text in sources]
        rows = [text for text in sources for _ in range(n)]
        drawn: list[str] = []
        for k, start in enumerate(range(0, len(rows), batch)):
            chunk = rows[start : start + batch]
            step_seed = None if seed is None else seed + k
            drawn += self.decode(self.generate(len(chunk), seed=step_seed, source=chunk, **options).tokens)
        return [drawn[i : i + n] for i in range(0, len(drawn), n)]

    def choose(
        self, candidates: Sequence[Sequence[str]], sources: Sequence[str], *, rerank: bool = False, ranked: bool = False
    ) -> list[str]:
        """One sentence per source from its `candidates`, with the names put back: after the
        reranking of `write_from` if asked, the MBR pick, or the first if the candidates are
        `ranked` (beam search's, best first)."""
        if rerank and not self.config.data.delexicalise:
            raise ValueError("reranking by placeholders needs a run trained with data.delexicalise")
        slots = delex_slots(self.config.data.delex_slots)
        chosen = []
        for group, source in zip(candidates, sources):
            if rerank:
                held = open_values(source_tokens(source), slots)
                errors = [placeholder_errors(text, held, slots) for text in group]
                group = [text for text, e in zip(group, errors) if e == min(errors)]
            chosen.append(group[0] if ranked else group[mbr_pick(group)])
        return self._relexicalised(chosen, sources)

    def decode(self, tokens: torch.Tensor) -> list[str]:
        """Word ids [B, L] -> sentences, cut at the first END or PAD."""
        return [" ".join(self.vocab.decode(row.tolist())) for row in tokens]

    def _relexicalised(self, texts: list[str], source: str | Sequence[str]) -> list[str]:
        """Sentences written from a source (one, or one per sentence) with the proper names of
        their MRs put back in place of the placeholders (data.delexicalise)."""
        if not self.config.data.delexicalise:
            return texts
        sources = [source] * len(texts) if isinstance(source, str) else source
        slots = delex_slots(self.config.data.delex_slots)
        return [relexicalise(text, open_values(source_tokens(s), slots)) for text, s in zip(texts, sources)]

    def sample(self, n: int = 8, *, seed: int | None = 0, **options: Any) -> list[str]:
        """Sample n sentences.

        Diffusion runs take the options of `generate` (sampler, steps, constraints,
        condition, eta, clamp_from, …); autoregressive runs take temperature and top_p, or
        a sampler of `AR_OPTIONS` (cgmh, fudge, beam) or (a run trained with
        model.condition=slots or source) a condition or a source, with `generate`'s options.
        """
        if not self.is_autoregressive or options.get("sampler") in AR_OPTIONS or {"condition", "source"} & set(options):
            texts = self.decode(self.generate(n, seed=seed, **options).tokens)
            return texts if options.get("source") is None else self._relexicalised(texts, options["source"])
        if n < 1:
            raise ValueError(f"n must be ≥ 1, got {n}")
        unknown = set(options) - {"temperature", "top_p"}
        if unknown:
            raise ValueError(f"unknown option(s) for an autoregressive run: {sorted(unknown)}")
        assert isinstance(self.model, CausalLM)
        return self.decode(self.model.generate(n, generator=self._generator(seed), **options))


def _positions(tokens: torch.Tensor) -> int:
    """The LM calls of a left-to-right sampler that wrote `tokens` [n, L]: one per position of the longest row."""
    return int((tokens != Vocab.PAD_ID).sum(1).max()) - 1


def _check_reading(name: str, value: int, rounding: str) -> int:
    """best_of or reads, R ≥ 1 and > 1 only with contextual rounding; ValueError otherwise."""
    if value < 1 or (value > 1 and rounding != "contextual"):
        raise ValueError(f"{name} must be ≥ 1, and > 1 only with contextual rounding; got {value} with {rounding}")
    return value


def _fixed_length(constraints: Sequence[Constraint]) -> int | None:
    """The word count the constraints fix (`FixesLength`), None if none does; ValueError if they disagree."""
    lengths = {c.fixed_length() for c in constraints if isinstance(c, FixesLength)}
    if len(lengths) > 1:
        raise ValueError(f"the constraints fix different lengths: {sorted(lengths)} words")
    return lengths.pop() if lengths else None


def _check_steerable(constraints: Sequence[Constraint], kinds: tuple[type, ...], sampler: str, takes: str) -> None:
    """ValueError naming the constraints not of `kinds`, which cannot steer `sampler`; it `takes` those."""
    unsupported = [type(c).__name__ for c in constraints if not isinstance(c, kinds)]
    if unsupported:
        raise ValueError(f"{', '.join(unsupported)} cannot steer {sampler}: it takes {takes}")


def _refuse_options(why: str, **options: Any) -> None:
    """ValueError naming, sorted, the options set (not None, not empty) that a run cannot use:
    "option(s) … {why}"."""
    given = sorted(key for key, value in options.items() if value is not None and value != {})
    if given:
        raise ValueError(f"option(s) {', '.join(given)} {why}")


def load(run_dir: str | Path, **kwargs: Any) -> Pipeline:
    """Load a trained run directory, a saved model or a Hub id; see `Pipeline.from_run`."""
    return Pipeline.from_run(run_dir, **kwargs)
