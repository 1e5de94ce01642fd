"""Stage `card`: reports/model_card.md and a self-contained reports/model_card.html, from the
run's own files (stages/evaluation/card.py)."""

from __future__ import annotations

import logging

from stages.core.contracts import (
    EVAL_METRICS_PATH,
    EXPORT_METRICS_PATH,
    LEARNING_CURVES_PNG,
    MODEL_CARD_HTML,
    MODEL_CARD_PATH,
    PREDICTIONS_PNG,
    VALIDATION_REPORT_PATH,
    load_meta,
)
from stages.core.errors import run_main
from stages.core.io import read_json, write_text
from stages.core.params import load_params
from stages.evaluation.card import card_blocks, to_html, to_markdown

log = logging.getLogger(__name__)


def main() -> None:
    params = load_params()
    blocks = card_blocks(params, load_meta(), read_json(EVAL_METRICS_PATH), read_json(EXPORT_METRICS_PATH),
                         read_json(VALIDATION_REPORT_PATH),
                         {"learning curves": LEARNING_CURVES_PNG, "test predictions": PREDICTIONS_PNG})
    write_text(MODEL_CARD_PATH, to_markdown(blocks))
    write_text(MODEL_CARD_HTML, to_html(blocks))
    log.info("wrote %s and %s", MODEL_CARD_PATH, MODEL_CARD_HTML)


if __name__ == "__main__":
    run_main(main, "card")
