"""The evaluation stage: perplexity, generation, steering, language identification, judging and tasks."""
