"""`resmlp translate`: a trained translator on sentences from a file or stdin, one translation a line on stdout."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "translate",
        help="translate sentences (one a line, from FILE or stdin) with a trained translator; one line out each",
    )
    p.add_argument("run", help="run directory or checkpoint of a translator (resmlp train --recipe multi30k_en_de)")
    p.add_argument("file", nargs="?", default=None, help="source sentences, one a line (default: stdin)")
    p.add_argument("--beam", type=int, default=None, help="beam size (default: the run's text.beam; 1 = greedy)")
    p.add_argument("--len-penalty", type=float, default=None, help="length penalty (default: the run's)")
    p.set_defaults(func=run_translate)


def run_translate(args: argparse.Namespace) -> int:
    from pathlib import Path  # noqa: PLC0415

    from ..data.text import read_lines  # noqa: PLC0415
    from ..deploy.translate import load_text_model, translate_lines  # noqa: PLC0415

    tm = load_text_model(args.run)
    if tm.text.get("task") != "translation":
        raise ValueError(f"{args.run}: a {tm.text.get('task') or 'non-text'} run, not a translator")
    lines = read_lines(Path(args.file)) if args.file else [line.strip() for line in sys.stdin.read().split("\n")]
    if not args.file and lines and lines[-1] == "":
        lines = lines[:-1]  # the newline that ends the input
    beam = args.beam or tm.text.get("beam", 4)
    len_penalty = tm.text.get("len_penalty", 1.0) if args.len_penalty is None else args.len_penalty
    for line in translate_lines(tm, lines, beam=beam, len_penalty=len_penalty):
        print(line)
    return 0
