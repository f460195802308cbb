"""What evaluate_bpb scores: the same model's val_bpb at several eval batch sizes, and how many
distinct documents the scored validation rows hold.

A fixed model (unigram frequencies of the first training rows) is scored at each batch size: a
harness whose rows depend on the batch size gives different figures for one model. A uniform
model's figure, and the distinct documents that lie whole in the scored rows (a row's last one,
cropped, is not counted), say what the rows are. Pass the
trainer folders of two versions to compare them side by side in one run:

    python scripts/eval_rows.py
    python scripts/eval_rows.py --trainer-dir trainer /tmp/old/trainer
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH_SIZES = (8, 16, 48, 64, 100, 256)

# Run in a child per harness: prepare.py reads its scale from the environment at import.
PROBE = """
import json, sys
import torch
import prepare

enc = prepare.load_tokenizer()
counts = torch.ones(prepare.VOCAB_SIZE)
train = prepare.make_dataloader("train", 16, workers=0)
for _ in range(20):
    x, _ = next(train)
    counts += torch.bincount(x.flatten(), minlength=prepare.VOCAB_SIZE)
log_p = (counts / counts.sum()).log()


class Unigram(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.log_p = torch.nn.Parameter(log_p.clone())

    def forward(self, idx):
        return self.log_p.expand(*idx.shape, prepare.VOCAB_SIZE)


class Uniform(Unigram):
    def forward(self, idx):
        return torch.zeros(*idx.shape, prepare.VOCAB_SIZE)  # (a parameter, for evaluate_bpb's device)


model = Unigram()
scores = {b: prepare.evaluate_bpb(model, b) for b in json.loads(sys.argv[1])}
uniform = prepare.evaluate_bpb(Uniform(), 8)
bos = enc.encode_single_token(prepare.BOS_TOKEN)
rows = prepare.EVAL_TOKENS // prepare.MAX_SEQ_LEN
val = prepare.make_dataloader("val", rows, workers=0)
x, _ = next(val)
docs = set()
for row in x.tolist():
    starts = [i for i, t in enumerate(row) if t == bos] + [len(row)]
    docs |= {tuple(row[a:b]) for a, b in zip(starts, starts[1:]) if b < len(row)}  # whole ones
print(json.dumps({"scores": scores, "uniform": uniform, "rows": rows, "distinct_whole_documents": len(docs)}))
"""


def probe(trainer_dir: Path) -> dict:
    env = {**os.environ, "AUTORESEARCH_SCALE": "cpu", "AUTORESEARCH_DATA": "offline", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(BATCH_SIZES)],
        cwd=trainer_dir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--trainer-dir",
        type=Path,
        nargs="+",
        default=[ROOT / "trainer"],
        help="trainer folders to compare, each with its prepare.py",
    )
    args = parser.parse_args()
    print(
        f"{'harness':40} "
        + " ".join(f"B={b:<7}" for b in BATCH_SIZES)
        + " uniform   whole documents in the rows"
    )
    for folder in args.trainer_dir:
        found = probe(folder.resolve())
        scores = " ".join(f"{found['scores'][str(b)]:<9.5f}" for b in BATCH_SIZES)
        print(
            f"{str(folder)[:40]:40} {scores} {found['uniform']:<9.5f} "
            f"{found['distinct_whole_documents']} in {found['rows']} rows"
        )


if __name__ == "__main__":
    main()
