"""Where an OpenAI-compatible endpoint is and how to call it, without ever showing a secret.

:class:`LLMSettings` comes from the ``llm:`` section of the config
(:meth:`LLMSettings.from_config`: the key is read from the environment variable the config
*names*) or, for the sentiment tool, from the ``QUANTORCH_LLM_*`` environment variables
(:meth:`LLMSettings.from_env`). The key is a :class:`~pydantic.SecretStr`; a ``user:password@``
in ``base_url`` is moved to ``basic_auth`` (a ``SecretStr``, sent as HTTP basic auth); both are
registered with :func:`quantorch.redact.register_secret`, so ``repr``, ``str`` and
``model_dump`` can be logged and every later :func:`~quantorch.redact.redact` masks them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from quantorch.errors import ConfigError
from quantorch.llm.port import LLMError
from quantorch.redact import redact, register_secret, url_credential_secrets

if TYPE_CHECKING:
    from quantorch.config import LLMConfig

__all__ = [
    "LLM_API_KEY_ENV",
    "LLM_BASE_URL_ENV",
    "LLM_MODEL_ENV",
    "LLM_TIMEOUT_ENV",
    "serve_command",
    "LLMSettings",
]

LLM_BASE_URL_ENV = "QUANTORCH_LLM_BASE_URL"
LLM_MODEL_ENV = "QUANTORCH_LLM_MODEL"
LLM_API_KEY_ENV = "QUANTORCH_LLM_API_KEY"
LLM_TIMEOUT_ENV = "QUANTORCH_LLM_TIMEOUT"


def serve_command(model: str) -> str:
    """What ``quantorch serve llm --run`` starts for ``model`` (one line, for messages)."""
    import shlex

    from quantorch.llm.serving import vllm_command

    return shlex.join(vllm_command(model, max_model_len=None))


#: The name, in the operator's terms, of each setting (for the fix a message names).
_SETTING_NAMES = {
    "config": {"base_url": "llm.base_url", "model": "llm.model", "timeout_s": "llm.timeout_s"},
    "env": {"base_url": LLM_BASE_URL_ENV, "model": LLM_MODEL_ENV, "timeout_s": LLM_TIMEOUT_ENV},
}


class LLMSettings(BaseModel):
    """Where the OpenAI-compatible endpoint is and how to call it.

    Nothing it shows is secret: the key is a :class:`~pydantic.SecretStr`, and a
    ``user:password@`` in ``base_url`` is moved to ``basic_auth`` (a ``SecretStr``, sent as
    HTTP basic auth), so ``repr``, ``str`` and ``model_dump`` can be logged. Both are
    registered with :func:`quantorch.redact.register_secret`.

    ``origin`` (``config`` or ``env``) and ``api_key_env`` only shape error messages: they say
    which setting to change (``llm.base_url`` or ``QUANTORCH_LLM_BASE_URL``, and the name of
    the variable the key came from).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(description="e.g. http://localhost:8000/v1 (vllm serve)")
    model: str
    api_key: SecretStr | None = None
    basic_auth: SecretStr | None = Field(
        None, description="user:password (as written in a URL), sent as HTTP basic auth"
    )
    timeout_s: float = Field(30.0, gt=0)
    max_tokens: int = Field(300, ge=16)
    max_concurrency: int = Field(16, ge=1, description="requests in flight at once")
    max_retries: int = Field(
        3, ge=0, le=10, description="retries on timeouts, transport errors, HTTP 429 and 5xx"
    )
    origin: Literal["config", "env"] = "config"
    api_key_env: str | None = Field(
        None, description="name of the environment variable the key was read from"
    )

    @model_validator(mode="before")
    @classmethod
    def _credentials_out_of_the_url(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("base_url"), str):
            return data
        url = data["base_url"]
        try:
            parts = urlsplit(url)
        except ValueError:
            return data  # httpx refuses it at call time, with a redacted message
        if "@" not in parts.netloc:
            return data
        userinfo, _, host = parts.netloc.rpartition("@")
        if data.get("basic_auth") is not None:
            raise ValueError(
                "credentials given twice: in base_url (user:password@) and in basic_auth"
            )
        register_secret(userinfo)
        for secret in url_credential_secrets(url):
            register_secret(secret)
        return {**data, "base_url": urlunsplit(parts._replace(netloc=host)), "basic_auth": userinfo}

    @model_validator(mode="after")
    def _register_secrets(self) -> LLMSettings:
        if self.api_key is not None:
            register_secret(self.api_key.get_secret_value())
        return self

    def secrets(self) -> tuple[str, ...]:
        """The secret values these settings hold (to mask in any text about the call)."""
        values = []
        if self.api_key is not None:
            values.append(self.api_key.get_secret_value())
        if self.basic_auth is not None:
            userinfo = self.basic_auth.get_secret_value()
            values.append(userinfo)
            values.extend(url_credential_secrets(f"http://{userinfo}@host"))
        return tuple(v for v in values if v)

    def setting_name(self, field: Literal["base_url", "model", "timeout_s"]) -> str:
        """How the operator changes ``field``: ``llm.base_url`` or ``QUANTORCH_LLM_BASE_URL``."""
        return _SETTING_NAMES[self.origin][field]

    def key_hint(self) -> str:
        """What to check when the server refuses the credentials (HTTP 401/403)."""
        url_part = (
            f" (or the user:password in {self.setting_name('base_url')})"
            if self.basic_auth is not None
            else ""
        )
        if self.origin == "env":
            return f"check {LLM_API_KEY_ENV}{url_part}"
        if self.api_key_env:
            return (
                f"check the key in environment variable {self.api_key_env} "
                f"(llm.api_key_env){url_part}"
            )
        return (
            "the server wants a key: set llm.api_key_env to the name of the environment "
            f"variable that holds it{url_part}"
        )

    @classmethod
    def from_config(cls, cfg: LLMConfig, environ: Mapping[str, str] = os.environ) -> LLMSettings:
        """Settings for the ``llm:`` config section; the key is read from ``cfg.api_key_env``.

        Raises
        ------
        LLMError
            ``kind="input"``: no ``base_url``, or ``api_key_env`` names a variable that is unset
            or empty. The message is one line naming the fix.
        """
        if not cfg.base_url:
            raise LLMError(
                "no LLM endpoint: set llm.base_url in the config (e.g. http://localhost:8000/v1) "
                "and start a server with `quantorch serve llm --run` (it runs `"
                + serve_command(cfg.model) + "`)",
                kind="input",
            )
        api_key = None
        if cfg.api_key_env:
            api_key = (environ.get(cfg.api_key_env) or "").strip()
            if not api_key:
                raise LLMError(
                    f"environment variable {cfg.api_key_env} (llm.api_key_env) is not set: "
                    "export it or remove llm.api_key_env",
                    kind="input",
                )
            register_secret(api_key)
        try:
            return cls(
                base_url=cfg.base_url,
                model=cfg.model,
                api_key=api_key,
                timeout_s=cfg.timeout_s,
                max_tokens=cfg.max_tokens,
                max_concurrency=cfg.max_concurrency,
                max_retries=cfg.max_retries,
                origin="config",
                api_key_env=cfg.api_key_env,
            )
        except ValidationError as exc:
            raise LLMError(
                f"the llm settings are invalid ({_first_error(exc)}); check the llm: section",
                kind="input",
            ) from None

    @classmethod
    def from_env(cls) -> LLMSettings:
        """Settings from ``QUANTORCH_LLM_BASE_URL``, ``_MODEL``, ``_API_KEY`` (optional) and
        ``_TIMEOUT`` (seconds, default 30), as the sentiment tool reads them.

        One attempt per request (``max_retries=0``): the tool reports a failed call as an error
        result and its caller decides about retrying.

        Raises
        ------
        ConfigError
            The URL or the model is not set, or a value is malformed.
        """
        base_url = os.environ.get(LLM_BASE_URL_ENV, "").strip()
        model = os.environ.get(LLM_MODEL_ENV, "").strip()
        if not base_url or not model:
            raise ConfigError(
                f"sentiment:llm needs an OpenAI-compatible endpoint: set {LLM_BASE_URL_ENV} "
                f"(e.g. http://localhost:8000/v1 for `vllm serve MODEL`) and {LLM_MODEL_ENV}"
            )
        try:
            timeout = float(os.environ.get(LLM_TIMEOUT_ENV, "30"))
        except ValueError:
            raise ConfigError(f"{LLM_TIMEOUT_ENV} must be a number of seconds") from None
        try:
            return cls(
                base_url=base_url,
                model=model,
                api_key=os.environ.get(LLM_API_KEY_ENV) or None,
                timeout_s=timeout,
                max_retries=0,
                origin="env",
                api_key_env=LLM_API_KEY_ENV,
            )
        except ValidationError as exc:
            raise ConfigError(
                f"sentiment:llm settings from the environment are invalid ({_first_error(exc)}); "
                f"check {LLM_BASE_URL_ENV}, {LLM_TIMEOUT_ENV}"
            ) from None


def _first_error(exc: ValidationError) -> str:
    # the message only: pydantic's text quotes the input, which may be the key or the URL
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "settings"
    return f"{field}: {redact(first['msg'])}"
