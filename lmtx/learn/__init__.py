"""Learning from the teacher: fusing teacher and student evidence, choosing pseudo-positives, the losses and one
round's training of the student."""
