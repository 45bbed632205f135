"""Chat templates the package ships: ChatML for the embedded SmolLM2 (when its GGUF has none), for the tiny test
model, and for recipes that name `chat_template: chatml`. Imports nothing: every model module can use it."""

# ChatML, SmolLM2-Instruct's prompt layout.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
