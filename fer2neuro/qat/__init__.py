"""Quantisation-aware fine-tuning: train the model through the integer
network a fixed-point target runs (loihi.py), so that what is trained is
what the chip runs (finetune.py: ``fer2neuro finetune --qat loihi``)."""

QAT_TARGETS = ("loihi",)       # the fixed-point targets fer2neuro fine-tunes for
