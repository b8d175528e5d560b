"""
Writes the canonical examples and evaluation examples in assets/edits/, for finetune_senses.py, in
the formats of Hewitt et al., Model Editing with Canonical Examples (2024): JSON lines
{"prefix": ..., "suffix": ...} for a single-suffix task, {"prefix": ..., "suffix1": ...,
"suffix2": ...} for a pair task.

    python assets/make_edit_tasks.py  # rewrites the files below (byte-for-byte the same output)

gender_*: the pair task " he" / " she" (made equally likely by --loss=balance) from
interventions.py's gender-bias prompts. The canonical examples are 10 professions (the first 10 of
the authors' pronoun_gender_bias_train-val file) in one of those prompts, "My {} said that" (the
authors' canonical prompt was "The {} said"); the evaluation takes the other prompts but "My {}
said" (too close to it): 11 prompts, for the same professions (gender_eval, as the authors evaluate)
and for the professions not trained on (gender_eval_heldout).

capitals_*: a single-suffix task (--loss=good): "The capital of France is" -> " Paris" for 10
countries; the evaluation puts the same countries in 6 other sentences.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from interventions import BIAS_PROMPTS, PROFESSIONS  # noqa: E402
from tokenizer import get_tokenizer  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "edits")
TRAINED = ["janitor", "driver", "chief", "teacher", "writer", "receptionist", "CEO", "nurse",
           "housekeeper", "secretary"]
CANONICAL_PROMPT = "My {} said that"  # one of BIAS_PROMPTS; the evaluation uses the others but one:
NEAR_COPY = "My {} said"  # the canonical prompt without its last word
CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Italy", "Rome"),
            ("Russia", "Moscow"), ("England", "London"), ("Germany", "Berlin"),
            ("Spain", "Madrid"), ("Greece", "Athens"), ("Ireland", "Dublin")]
CAPITAL_PROMPTS = ["Everyone knows that {}'s capital city is",
                   "The government of {} meets in the city of",
                   "After a long flight to {}, we landed in its capital,",
                   "In {}, the seat of government is",
                   "Our embassy in {} is in the city of",
                   "Tourists who visit {} usually start in"]


def write(name, records):
    with open(os.path.join(OUT, name), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    print(f"{name}: {len(records)} examples")


enc = get_tokenizer()
single_token = [p for p in PROFESSIONS if len(enc.encode(" " + p)) == 1]  # as in senses.py --bias
held_out = [p for p in single_token if p not in TRAINED]
eval_prompts = [t for t in BIAS_PROMPTS if t not in (CANONICAL_PROMPT, NEAR_COPY)]
os.makedirs(OUT, exist_ok=True)
write("gender_train.jsonl", [{"prefix": CANONICAL_PROMPT.format(p), "suffix1": " he",
                              "suffix2": " she"} for p in TRAINED])
write("gender_eval.jsonl", [{"prefix": t.format(p), "suffix1": " he", "suffix2": " she"}
                            for p in TRAINED for t in eval_prompts])
write("gender_eval_heldout.jsonl", [{"prefix": t.format(p), "suffix1": " he", "suffix2": " she"}
                                    for p in held_out for t in eval_prompts])
write("capitals_train.jsonl", [{"prefix": f"The capital of {c} is", "suffix": " " + city}
                               for c, city in CAPITALS])
write("capitals_eval.jsonl", [{"prefix": t.format(c), "suffix": " " + city}
                              for c, city in CAPITALS for t in CAPITAL_PROMPTS])
