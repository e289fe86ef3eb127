"""The room the model packages share: media decoding, Qwen3-VL inputs, batching, devices, preparation.

``omniret.embed``, ``omniret.rerank`` and ``omniret.training`` all build on these modules, so they live
beside those packages instead of inside one of them: nothing here imports ``embed``, ``rerank``,
``index``, ``api``, ``training`` or ``evaluation`` (see ARCHITECTURE.md).

- ``media``: images, PDF pages and video frames, decoded and sized exactly as qwen-vl-utils does.
- ``vl_inputs``: the Qwen3-VL prompt, token ids and pixel patches of one item.
- ``batching``: length-sorted batches under a token, item and patch budget.
- ``device``: torch device and dtype defaults.
- ``models``: loading a transformers model quietly, attention choice, pooling, moving inputs to a device.
- ``prepare``: "prepare every item, then run the model": per-item checks and failures.
- ``options``: the options both loaders take (``ModelOptions``, the media ones) and the refusal of unknown names.
"""
