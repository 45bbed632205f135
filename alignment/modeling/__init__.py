"""Models: loading a recipe's model and tokenizer, embedded and tiny models, chat templates, reward
models, LoRA adapter merging and the Hub."""
