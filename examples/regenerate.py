"""Rebuild examples/*.yaml from params.yaml: every section and comment as there, with the few
data/train lines each scenario changes replaced and marked `# <- why`.

Run after editing params.yaml (tests/test_evaluate.py checks that the examples' other sections
still equal params.yaml's):  python examples/regenerate.py
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name: (header, {section: {key: (value, why)}})
EXAMPLES: dict[str, tuple[str, dict[str, dict[str, tuple[str, str]]]]] = {
    "underfit": ("""\
# Example: UNDERFIT. A linear model on friedman data (a nonlinear function) cannot get near the
# noise floor, however long it trains: `dvc repro` ends with verdict `underfit`.
#   cp examples/underfit.yaml params.yaml && dvc repro && cat reports/fit.md
# Only the lines marked `<-` differ from the default params.yaml.
""", {"train": {
        "model": ("linear", "a straight line through a curved function"),
        "lr": ("0.01", "a convex problem: a larger step converges faster"),
        "epochs": ("100", "enough to converge: the limit is the model, not the training")}}),
    "overfit": ("""\
# Example: OVERFIT. A large unregularised MLP trained for many epochs, without early stopping,
# on a few hundred noisy rows memorises the train split: `dvc repro` ends with verdict `overfit`.
#   cp examples/overfit.yaml params.yaml && dvc repro && cat reports/fit.md
# Only the lines marked `<-` differ from the default params.yaml.
""", {"data": {"n_samples": ("300", "210 train / 45 val / 45 test rows")},
      "train": {
        "hidden": ("[256, 256]", "about 70k weights for 210 rows"),
        "lr": ("0.001", "steadier memorisation than the default 0.003"),
        "batch_size": ("32", ""),
        "epochs": ("500", "far past the val minimum"),
        "regularizer": ("none", "no penalty"),
        "reg_strength": ("0.0", ""),
        "early_stopping": ("{patience: null, min_delta: 0.0}", "no early stopping: the last epoch is kept")}}),
    "good": ("""\
# Example: GOOD. The default params.yaml, unchanged: an MLP with L2 regularisation and early
# stopping on 20000 friedman rows gets close to the noise floor on train and on val: verdict
# `good`. (With reg_strength 1e-4 the same MLP ends with train MSE 0.84, under the noise floor,
# and val 1.26: a 50% gap, verdict `overfit`.)
#   cp examples/good.yaml params.yaml && dvc repro && cat reports/fit.md
""", {}),
}


def set_key(text: str, section: str, key: str, value: str, why: str) -> str:
    """Replace `  key: ...` inside the top-level `section:` block, marking the line."""
    block = re.search(rf"^{section}:\n(?:(?:  .*|)\n)*", text, re.M)
    if block is None:
        raise SystemExit(f"params.yaml: no section {section!r}")
    line = f"  {key}: {value}".ljust(25) + "  # <-" + (f" {why}" if why else "")
    # the key's line and the comment lines that continue it (indented deeper than the key)
    new, n = re.subn(rf"^  {key}:.*\n(?:   +#.*\n)*", line + "\n", block.group(0), count=1, flags=re.M)
    if n != 1:
        raise SystemExit(f"params.yaml: no key {section}.{key}")
    return text[: block.start()] + new + text[block.end():]


def main() -> None:
    base = (ROOT / "params.yaml").read_text()
    for name, (header, changes) in EXAMPLES.items():
        text = base
        for section, keys in changes.items():
            for key, (value, why) in keys.items():
                text = set_key(text, section, key, value, why)
        text = re.sub(r"\A(#.*\n)+", header, text)  # the example's header replaces params.yaml's
        (ROOT / "examples" / f"{name}.yaml").write_text(text)
        print(f"examples/{name}.yaml")


if __name__ == "__main__":
    main()
