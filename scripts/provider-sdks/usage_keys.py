"""Every key path of the providers' usage types, as the pinned SDKs define
them (pydantic models, walked recursively), printed as JSON by usage format:
{"openai.chat": ["prompt_tokens", "prompt_tokens_details.cached_tokens", ...], ...}.
The test `sdk_usage::every_usage_key_the_sdks_define_is_mapped_or_ignored`
checks each against contract/src/providers.rs (KNOWN_KEYS), so an SDK update
that adds a counter fails until we map it or say why we ignore it.
"""

import json
import typing

from pydantic import BaseModel


def paths(model, prefix=""):
    out = []
    for name, field in model.model_fields.items():
        path = prefix + (field.alias or name)
        ann = field.annotation
        nested = [t for t in (typing.get_args(ann) or (ann,)) if isinstance(t, type) and issubclass(t, BaseModel)]
        if nested:
            for t in nested:
                out += paths(t, path + ".")
        else:
            out.append(path)
    return sorted(set(out))


def main():
    import anthropic
    import openai
    from anthropic.types import Usage as AnthropicUsage
    from openai.types import CompletionUsage
    from openai.types.responses import ResponseUsage

    print(json.dumps({
        "sdk_versions": {"openai": openai.__version__, "anthropic": anthropic.__version__},
        "openai.chat": paths(CompletionUsage),
        "openai.responses": paths(ResponseUsage),
        "anthropic": paths(AnthropicUsage),
    }))


if __name__ == "__main__":
    main()
