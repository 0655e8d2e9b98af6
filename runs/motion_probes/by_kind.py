"""J&F by expression kind (attribute; motion: "moves <direction>", "does not move", "moves fastest";
temporal: "stops first", "keeps moving") of `evtp bench reference` records (keep 1.0) and of
`evtp eval` samples, on the synthetic test videos (the instruction is regenerated from the index).

    .venv/bin/python runs/motion_probes/by_kind.py NAME=RECORDS_OR_SAMPLES.jsonl ...
"""
import collections
import json
import sys

from evtp.data.synthetic import make_sample

KINDS = ["attribute", "moves <dir>", "does not move", "moves fastest", "stops first", "keeps moving"]


def kind(instruction: str) -> str:
    for k in ("does not move", "moves fastest", "stops first", "keeps moving"):
        if k in instruction:
            return k
    if any(instruction.endswith("moves " + d) for d in ("left", "right", "up", "down")):
        return "moves <dir>"
    return "attribute"


def scores(path: str) -> dict[str, list[float]]:
    out = collections.defaultdict(list)
    for line in open(path):
        r = json.loads(line)
        if "header" in r or r.get("keep", "1.0") != "1.0":
            continue
        index = r["meta"]["index"] if "meta" in r else int(r["sample_id"].split("-")[-1])
        out[kind(make_sample("test", index, "video").instruction)].append(r["metrics"]["J&F"])
    return out


if __name__ == "__main__":
    print("| weights | " + " | ".join(KINDS) + " |")
    print("|---" * (len(KINDS) + 1) + "|")
    for arg in sys.argv[1:]:
        name, path = arg.split("=", 1)
        a = scores(path)
        print(f"| {name} | " + " | ".join(f"{sum(a[k]) / len(a[k]):.2f} ({len(a[k])})" for k in KINDS) + " |")
