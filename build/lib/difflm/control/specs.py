"""What a constraint built from a command-line string may need besides the string."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from difflm.control.classifiers import LatentClassifier, load_classifier
from difflm.control.judges import judge_of
from difflm.text.vocab import Vocab


@dataclass
class SpecContext:
    """What a constraint built from a command-line string may need besides the string.

    Attributes:
        vocab: the run's vocabulary.
        max_len: L of the run.
        run: the run directory, where classifier constraints find RUN/classifiers/<task>/;
            None when only classifier-free constraints are built.
    """

    vocab: Vocab
    max_len: int
    run: Path | None = None
    _classifiers: dict[str, LatentClassifier] = field(default_factory=dict, repr=False)

    def classifier(self, task: str) -> LatentClassifier:
        """The run's `task` classifier, loaded once: --tree and --span share the tree classifier.

        Raises:
            ValueError: no run directory, or the run has no such classifier (naming the command that trains it).
        """
        if self.run is None:
            raise ValueError(f"a {task} constraint needs a run directory with a trained {task} classifier")
        if task not in self._classifiers:
            self._classifiers[task] = load_classifier(self.run, task)
        return self._classifiers[task]

    def judge(self) -> str:
        """How classifier constraints check outputs: "grammar" or "text" (`judge_of` the run)."""
        if self.run is None:
            raise ValueError("judging a classifier constraint needs the run directory")
        return judge_of(self.run)
