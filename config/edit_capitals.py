# Sense finetuning, a single-suffix task: make "The capital of France is" continue with " Paris",
# for 10 countries, and see how far the edit carries over to 6 other sentences about the same
# countries (assets/edits/capitals_*.jsonl, made by assets/make_edit_tasks.py). The script's
# defaults are the gender task's; this swaps in the capitals:
#
#     # senses
#     python finetune_senses.py config/edit_capitals.py
#     # the baseline
#     python finetune_senses.py config/edit_capitals.py --method=full --learning_rate=1e-5
#
# Success on an evaluation example is the authors' criterion for their country_capital task:
# p(suffix) >= 0.2.
# What it does on the quickstart model, and why the rate is high: docs/finetune.md.

examples = "assets/edits/capitals_train.jsonl"
eval = "assets/edits/capitals_eval.jsonl"
loss = "good"  # make the suffix likely
learning_rate = 0.3  # each country's senses get one step per epoch; " Paris" starts ~11 nats away
out_dir = "out-capitals"
