"""Settings: the ``S3_*`` names of the original django_s3 app, read by pydantic-settings.

Settings are built once, by the command line, the service or the Django app, and
passed down explicitly; no other module reads the environment.

Sources, strongest first: keyword arguments, the environment, the ``.env`` file,
the secrets folder (systemd's ``$CREDENTIALS_DIRECTORY``, one file per setting,
e.g. ``S3_AWS_SECRET_ACCESS_KEY``), then the defaults below.

>>> s = Settings(_env_file=None, bucket_name="pictures")
>>> s.category_map["CF"]
'CLIPPING-FLOWER'
"""

from __future__ import annotations

import json
import os
import re
import stat
import string
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from s3sync.errors import ConfigurationError

__all__ = [
    "DEFAULT_CATEGORY_MAP",
    "ENV_PREFIX",
    "KEY_TEMPLATE_FIELDS",
    "Settings",
    "default_data_dir",
    "default_settings",
    "load_settings",
    "resolve_folders",
    "set_default_settings_factory",
]

ENV_PREFIX = "S3_"

DEFAULT_CATEGORY_MAP: Mapping[str, str] = {
    "B": "BACKGROUND",
    "F": "VASE",
    "CF": "CLIPPING-FLOWER",
    "WF": "WRAPPING-FLOWER",
    "CR": "CATALOGUE-PRODUCT",
    "PP": "PERSONALIZED-PRODUCT",
    "CM": "COMPOSITION",
}
DEFAULT_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "gif", "svg", "webp", "tif", "tiff", "bmp"})

#: The fields a ``S3_KEY_TEMPLATE`` may use.
KEY_TEMPLATE_FIELDS = frozenset({"category", "code", "serial", "folder", "rest", "name", "extension", "stem"})

_CODE_RE = re.compile(r"[A-Z]{1,4}")
_CATEGORY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_EXTENSION_RE = re.compile(r"[a-z0-9]{3,4}")
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_MIB = 1024 * 1024


def _usable_home(uid: int) -> Path | None:
    """The user's home folder if it is really theirs: absolute, a folder they own and can write."""
    try:
        home = Path.home()  # $HOME, else the password database
    except (RuntimeError, KeyError):
        return None
    if not home.is_absolute():
        return None
    try:
        st = home.stat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or not os.access(home, os.W_OK | os.X_OK):
        return None
    return home


def _private_temp_root(uid: int) -> Path:
    """``<temp>/s3sync-<uid>``, created 0700; refused unless it is this user's own private folder."""
    root = Path(tempfile.gettempdir()) / f"s3sync-{uid}"
    hint = "set S3_STATE_PATH, S3_UPLOAD_DIR_PATH and S3_LOCAL_PATH, or give the user a home folder"
    try:
        root.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigurationError(f"default folder {root}: cannot create it ({exc.strerror}); {hint}") from None
    st = root.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022:
        raise ConfigurationError(
            f"default folder {root} is not a private folder of uid {uid} (someone else made it); {hint}"
        )
    return root


def _default_root(kind: Literal["state", "data"]) -> Path:
    """Where unconfigured folders live: the user's own, never a folder shared by every user.

    State: ``$XDG_STATE_HOME/s3sync`` (``~/.local/state/s3sync``); upload and mirror folders:
    ``$XDG_DATA_HOME/s3sync`` (``~/.local/share/s3sync``). Without a usable home folder (a
    system user, ``HOME=/``), ``<temp>/s3sync-<uid>``, private to the user.
    """
    var, under_home = ("XDG_STATE_HOME", ".local/state") if kind == "state" else ("XDG_DATA_HOME", ".local/share")
    xdg = os.environ.get(var, "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec: a relative value is invalid and ignored
        return Path(xdg) / "s3sync"
    uid = os.getuid()
    home = _usable_home(uid)
    if home is not None:
        return home / under_home / "s3sync"
    return _private_temp_root(uid)


def default_data_dir() -> Path:
    """This user's default folder for s3sync's data (the demo server keeps its bucket under it)."""
    return _default_root("data")


def _split_words(value: object) -> object:
    """Accept ``"jpg png"``, ``"jpg,png"``, a JSON list, or any iterable."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError("not a valid JSON list") from exc
        return [w for w in re.split(r"[\s,]+", text) if w]
    return value


class Settings(BaseSettings):
    """Every setting of s3sync; the environment name is ``S3_`` + the field name in upper case."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,  # validation errors must never echo a secret back
        # Fields with aliases (botocore's own variable names) still take their field name as an
        # argument: Settings(region=...). In the environment only the aliases count.
        populate_by_name=True,
        validate_default=True,
        # An empty line (`S3_AWS_SECRET_ACCESS_KEY=`, as .env.example has) means "not set here":
        # it must not hide a value from a lower source (systemd's LoadCredential= files).
        env_ignore_empty=True,
    )

    # --- the original django_s3 names -------------------------------------------------------
    bucket_name: str | None = Field(None, description="Bucket to sync with.")
    aws_access_key_id: SecretStr | None = Field(None, description="Access key; boto3's chain when unset.")
    aws_secret_access_key: SecretStr | None = Field(None, description="Secret key; boto3's chain when unset.")
    aws_session_token: SecretStr | None = Field(
        None, description="Session token of temporary keys (sent as X-Amz-Security-Token); with the pair above."
    )
    local_path: Path = Field(default_factory=lambda: _default_root("data") / "mirror", description="Mirror folder.")
    upload_dir_path: Path = Field(default_factory=lambda: _default_root("data") / "upload", description="Watched.")
    aws_base_url: str = Field("https://s3.amazonaws.com/", description="Base of public URLs.")
    category_map: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_CATEGORY_MAP))

    # --- the library -------------------------------------------------------------------------
    endpoint_url: str | None = Field(None, description="Any S3-compatible server; AWS when unset.")
    region: str | None = Field(
        None,
        # The SDKs' own names apply when S3_REGION is unset (then ~/.aws/config's region, then
        # us-east-1 for a custom endpoint).
        validation_alias=AliasChoices("S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
        description="Region; AWS_REGION / AWS_DEFAULT_REGION / the AWS config file when unset.",
    )
    ca_bundle: Path | None = Field(
        None,
        # botocore's own name is honoured too (then ca_bundle in the AWS config file, then
        # REQUESTS_CA_BUNDLE): every request trusts what botocore would trust.
        validation_alias=AliasChoices("S3_CA_BUNDLE", "AWS_CA_BUNDLE"),
        description="PEM file of the CAs trusted for an https endpoint (AWS_CA_BUNDLE when unset).",
    )
    requests_ca_bundle: Path | None = Field(
        None,
        validation_alias=AliasChoices("REQUESTS_CA_BUNDLE"),
        description="botocore's last resort for CAs (REQUESTS_CA_BUNDLE), after the AWS config file's ca_bundle.",
    )
    key_template: str = "{category}/{folder}/{name}"
    allowed_extensions: Annotated[frozenset[str], NoDecode] = DEFAULT_EXTENSIONS
    multipart_threshold: int = Field(8 * _MIB, ge=5 * _MIB, le=5 * 1024 * _MIB)
    multipart_chunksize: int = Field(8 * _MIB, ge=5 * _MIB, le=5 * 1024 * _MIB)
    connect_timeout: float = Field(5.0, gt=0, le=300)
    read_timeout: float = Field(60.0, gt=0, le=3600)
    max_attempts: int = Field(3, ge=1, le=20, description="Attempts per request (botocore's standard retry mode).")
    request_stack: Literal["auto", "crt", "botocore"] = Field(
        "auto",
        description="What carries the requests: awscrt on a custom endpoint, botocore on AWS (auto), or one of them.",
    )
    # Publishing for the web (s3sync.publish): URL forms and what every uploaded object carries.
    public_base_url: str | None = Field(
        None, description="CDN or custom-domain root: URLs are this + key (no bucket segment)."
    )
    url_style: Literal["path", "virtual"] = Field(
        "path", description="path: S3_AWS_BASE_URL + bucket/key; virtual: https://bucket.<host>/key."
    )
    default_acl: (
        Literal[
            "private",
            "public-read",
            "public-read-write",
            "authenticated-read",
            "aws-exec-read",
            "bucket-owner-read",
            "bucket-owner-full-control",
        ]
        | None
    ) = Field(None, description="Canned ACL on upload (public-read: what django_s3 did); none when unset.")
    cache_control: str | None = Field(None, description="Cache-Control of uploaded objects, e.g. max-age=86400.")

    # --- the daemon --------------------------------------------------------------------------
    watch_mode: Literal["auto", "inotify", "polling"] = "auto"
    settle_seconds: float = Field(2.0, ge=0, le=3600)
    rejected_dir: Path | None = None
    after_upload: Literal["keep", "move", "delete"] = "keep"
    upload_on_conflict: Literal["keep", "overwrite"] = Field(
        "keep",
        description="A file whose key another path owns with other content: keep it in place (conflict) or overwrite.",
    )
    conditional_writes: Literal["auto", "on", "off"] = Field(
        "auto",
        description="If-None-Match/If-Match on uploads, so that no writer overwrites another's new version "
        "unseen: auto (probed once per endpoint), on, off.",
    )
    done_dir: Path | None = None
    state_path: Path = Field(default_factory=lambda: _default_root("state") / "state.db")
    rescan_interval: float = Field(60.0, gt=0, le=86400)
    max_concurrency: int = Field(8, ge=1, le=128)
    retry_base: float = Field(1.0, gt=0, le=600, description="First retry delay of a failed transfer.")
    retry_cap: float = Field(300.0, gt=0, le=86400, description="Longest delay between retries.")
    mirror_interval: float = Field(60.0, ge=0, le=86400)
    mirror_prefix: str = ""
    mirror_delete: bool = False
    mirror_max_delete: int = Field(100, ge=0, le=10_000_000)
    #: A file in the mirror folder that a person changed or created: "keep" it (skip the key),
    #: "keep-both" (move it to a ``.local-<time>`` sibling, then download), or "overwrite" it.
    mirror_on_local_change: Literal["keep", "keep-both", "overwrite"] = "keep"
    #: An SQS queue fed by the bucket's event notifications (directly, through SNS, or from
    #: EventBridge): the mirror applies changes as they arrive, lists the whole bucket only every
    #: ``S3_MIRROR_RECONCILE_INTERVAL``, and polls at ``S3_MIRROR_INTERVAL`` while the queue is unreachable.
    events_queue_url: str | None = Field(None, description="SQS queue URL of the bucket's event notifications.")
    mirror_reconcile_interval: float = Field(
        6 * 3600.0, gt=0, le=7 * 86400, description="With S3_EVENTS_QUEUE_URL: seconds between full listings."
    )
    #: SQS long polling: how long one ReceiveMessage waits for a message (also bounds a shutdown's wait).
    events_wait_seconds: int = Field(20, ge=1, le=20)
    shutdown_timeout: float = Field(30.0, ge=0, le=3600)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # --- the service -------------------------------------------------------------------------
    metrics_addr: str | None = None
    health_max_mirror_age: float = Field(0.0, ge=0, description="0: three mirror intervals.")
    loop_stall_seconds: float = Field(
        60.0, ge=1, le=3600, description="A loop that has not ticked for this long is hung: watchdog pings stop."
    )
    local_server: bool = Field(False, description="Start an embedded rclone S3 server (demo).")

    # --- validators --------------------------------------------------------------------------
    @field_validator("aws_access_key_id", "aws_secret_access_key", "aws_session_token", "region", mode="before")
    @classmethod
    def _blank_is_unset(cls, v: object) -> object:
        # An empty line in .env, or a credential file ending in a newline, is not a value.
        if isinstance(v, SecretStr):
            v = v.get_secret_value()
        if isinstance(v, str):
            v = v.strip()
            return v or None
        return v

    @field_validator("bucket_name")
    @classmethod
    def _check_bucket(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not _BUCKET_RE.fullmatch(v) or ".." in v:
            raise ValueError("must be 3-63 characters of lower-case letters, digits, '.' and '-'")
        return v

    @field_validator("aws_base_url", "endpoint_url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not re.match(r"https?://[^\s/]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @field_validator("public_base_url")
    @classmethod
    def _check_public_url(cls, v: str | None) -> str | None:
        if v is None or v.strip() == "":
            return None
        parts = urlsplit(v.strip())
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL, e.g. https://cdn.example.com/")
        if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
            raise ValueError("must be a plain root URL: no user:password@, no ?query, no #fragment")
        if any(ch.isspace() for ch in v.strip()):
            raise ValueError("must not contain spaces")
        text = v.strip()
        return text if text.endswith("/") else text + "/"

    @field_validator("default_acl", "cache_control", mode="before")
    @classmethod
    def _blank_is_none(cls, v: object) -> object:
        if isinstance(v, str) and v.strip() == "":
            return None
        return v.strip() if isinstance(v, str) else v

    @field_validator("cache_control")
    @classmethod
    def _check_cache_control(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if len(v) > 1024 or not v.isascii() or not v.isprintable():
            raise ValueError("must be one line of printable ASCII (at most 1024), e.g. public, max-age=86400")
        return v

    @field_validator("aws_base_url")
    @classmethod
    def _slash(cls, v: str | None) -> str:
        v = v or "https://s3.amazonaws.com/"
        return v if v.endswith("/") else v + "/"

    @field_validator("category_map", mode="before")
    @classmethod
    def _parse_map(cls, v: object) -> object:
        if isinstance(v, str | bytes):
            try:
                v = json.loads(v)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ValueError('must be a JSON object such as {"B": "BACKGROUND"}') from exc
        if not isinstance(v, Mapping):
            raise ValueError('must be a JSON object such as {"B": "BACKGROUND"}')  # noqa: TRY004 - pydantic wants ValueError
        return v

    @field_validator("category_map")
    @classmethod
    def _check_map(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("must name at least one category")
        for code, category in v.items():
            if not _CODE_RE.fullmatch(code):
                raise ValueError(f"code {code[:20]!r} must be 1-4 upper-case letters")
            if not _CATEGORY_RE.fullmatch(category) or category in {".", ".."} or ".." in category:
                raise ValueError(f"category for {code!r} must be 1-63 letters, digits, '_', '.', '-' (no '..', no '/')")
        return v

    @field_validator("allowed_extensions", mode="before")
    @classmethod
    def _parse_extensions(cls, v: object) -> object:
        v = _split_words(v)
        if isinstance(v, list | tuple | set | frozenset):
            return frozenset(str(e).lower().lstrip(".") for e in v)
        return v

    @field_validator("allowed_extensions")
    @classmethod
    def _check_extensions(cls, v: frozenset[str]) -> frozenset[str]:
        if not v:
            raise ValueError("must name at least one extension")
        for ext in v:
            if not _EXTENSION_RE.fullmatch(ext):
                raise ValueError(f"extension {ext[:20]!r} must be 3-4 letters or digits")
        return v

    @field_validator("key_template")
    @classmethod
    def _check_template(cls, v: str) -> str:
        try:
            fields = [f for _, f, spec, conv in string.Formatter().parse(v) if f is not None]
        except ValueError as exc:
            raise ValueError(f"is not a valid template ({exc})") from exc
        unknown = sorted(set(fields) - KEY_TEMPLATE_FIELDS)
        if unknown or any(f == "" for f in fields):
            raise ValueError(f"may only use {{{'}, {'.join(sorted(KEY_TEMPLATE_FIELDS))}}}, not {unknown}")
        if "name" not in fields and "stem" not in fields:
            raise ValueError("must contain {name} (or {stem}) so keys stay unique")
        if v.startswith("/") or "\\" in v or any(seg in {".", ".."} for seg in v.split("/")):
            raise ValueError("must be a relative key: no leading '/', no '\\', no '.' or '..' segments")
        return v

    @field_validator(
        "local_path", "upload_dir_path", "state_path", "rejected_dir", "done_dir", "ca_bundle", "requests_ca_bundle",
        mode="before",
    )
    @classmethod
    def _expand(cls, v: object) -> object:
        if isinstance(v, str) and v.strip() == "":
            return None
        if isinstance(v, str | os.PathLike):
            text = os.fspath(v)
            if "\x00" in str(text):
                raise ValueError("must not contain a NUL character")
            try:
                return Path(text).expanduser()
            except RuntimeError:  # "~someone" with no such user
                raise ValueError("starts with '~' but that user's home folder is unknown") from None
        return v

    @field_validator(
        "local_path", "upload_dir_path", "state_path", "rejected_dir", "done_dir", "ca_bundle", "requests_ca_bundle"
    )
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        if v is None:
            return None
        if not v.is_absolute():
            raise ValueError("must be an absolute path (a daemon has no meaningful working folder)")
        if len(os.fsencode(v)) > 4000:
            raise ValueError("is too long")
        return Path(os.path.normpath(v))

    @field_validator("ca_bundle", "requests_ca_bundle")
    @classmethod
    def _readable_file(cls, v: Path | None) -> Path | None:
        if v is None:
            return None
        if not v.is_file() or not os.access(v, os.R_OK):
            raise ValueError("must be a readable PEM file of CA certificates (S3_CA_BUNDLE, else AWS_CA_BUNDLE)")
        return v

    @field_validator("events_queue_url")
    @classmethod
    def _check_queue_url(cls, v: str | None) -> str | None:
        if v is None or v.strip() == "":
            return None
        v = v.strip()
        # https://sqs.<region>.amazonaws.com/<account>/<name>, or a local server's http://host:port/<account>/<name>.
        if not re.fullmatch(r"https?://[^\s/]+/[^\s/]+/[A-Za-z0-9_-]{1,80}(\.fifo)?/?", v):
            raise ValueError("must be an SQS queue URL such as https://sqs.eu-west-1.amazonaws.com/123456789012/name")
        return v.rstrip("/")

    @field_validator("metrics_addr")
    @classmethod
    def _check_addr(cls, v: str | None) -> str | None:
        if not v:
            return None
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:9108 (port 0: any free port)")
        return v

    @model_validator(mode="after")
    def _check_folders(self) -> Settings:
        up, mirror = self.upload_dir_path, self.local_path
        if _overlap(up, mirror):
            raise ValueError("S3_UPLOAD_DIR_PATH and S3_LOCAL_PATH must be separate folders, neither inside the other")
        if self.after_upload == "move" and self.done_dir is None:
            raise ValueError("S3_AFTER_UPLOAD=move needs S3_DONE_DIR")
        for name, extra in (("S3_DONE_DIR", self.done_dir), ("S3_REJECTED_DIR", self.rejected_dir)):
            if extra is not None and (_overlap(extra, mirror) or extra == up):
                raise ValueError(f"{name} must not be the upload folder or overlap S3_LOCAL_PATH")
        if _inside(self.state_path, mirror):
            raise ValueError("S3_STATE_PATH must not be inside S3_LOCAL_PATH")
        if self.events_queue_url and self.mirror_interval == 0:
            raise ValueError(
                "S3_EVENTS_QUEUE_URL needs the mirror on: S3_MIRROR_INTERVAL (the polling interval while the queue "
                "is unreachable) must be above 0"
            )
        if self.multipart_chunksize > self.multipart_threshold:
            raise ValueError("S3_MULTIPART_CHUNKSIZE must not exceed S3_MULTIPART_THRESHOLD")
        if self.endpoint_url and "aws_base_url" not in self.model_fields_set:
            # URLs point where the objects are: a custom endpoint's, not AWS's, unless told otherwise.
            object.__setattr__(self, "aws_base_url", self.endpoint_url.rstrip("/") + "/")
        host = (urlsplit(self.aws_base_url).hostname or "").lower()
        if (
            self.url_style == "virtual"
            and not self.public_base_url
            and self.bucket_name
            and "." in self.bucket_name
            and self.aws_base_url.startswith("https:")
            and host.endswith("amazonaws.com")
        ):
            raise ValueError(
                "S3_URL_STYLE: virtual-hosted https URLs fail TLS for a bucket name with dots "
                "(*.s3.amazonaws.com does not cover it); use S3_URL_STYLE=path or S3_PUBLIC_BASE_URL"
            )
        return self

    # --- helpers -----------------------------------------------------------------------------
    def require_bucket(self) -> str:
        """Return the bucket name, or raise a :class:`ConfigurationError` if it is not set."""
        if not self.bucket_name:
            raise ConfigurationError(
                "S3_BUCKET_NAME: not set (set it, or run `s3sync run --local-server` for a local demo)",
                setting="S3_BUCKET_NAME",
            )
        return self.bucket_name

    def masked(self) -> dict[str, str]:
        """The effective settings as ``S3_*`` strings, secrets masked: for ``s3sync config``."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value: Any = getattr(self, name)
            if isinstance(value, SecretStr):
                text = "********" if value.get_secret_value() else ""
            elif value is None:
                text = ""
            elif isinstance(value, frozenset):
                text = " ".join(sorted(value))
            elif isinstance(value, dict):
                text = json.dumps(value, separators=(",", ":"))
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            out[env_name(name)] = text
        return out


def env_name(field: str) -> str:
    """The variable that sets ``field``: ``S3_<FIELD>``, or its first alias (``S3_REGION``, ``REQUESTS_CA_BUNDLE``).

    >>> env_name("bucket_name"), env_name("requests_ca_bundle")
    ('S3_BUCKET_NAME', 'REQUESTS_CA_BUNDLE')
    """
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices) and alias.choices and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return ENV_PREFIX + field.upper()


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _overlap(a: Path, b: Path) -> bool:
    a, b = Path(os.path.realpath(a)), Path(os.path.realpath(b))
    return _inside(a, b) or _inside(b, a)


def _describe_all(exc: ValidationError) -> tuple[tuple[str, str], ...]:
    """One ``(setting, message)`` per invalid setting (the first problem of each), in field order."""
    found: dict[str, str] = {}
    for err in exc.errors(include_url=False, include_input=False):
        setting, message = _describe_one(err)
        found.setdefault(setting, message)
    return tuple(found.items())


def _describe_one(err: Any) -> tuple[str, str]:
    loc = [str(p) for p in err.get("loc", ()) if isinstance(p, str)]
    # An aliased field is located by the alias that set it (S3_CA_BUNDLE, aws_region...).
    setting = (env_name(loc[0]) if loc[0] in Settings.model_fields else loc[0].upper()) if loc else "settings"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if not loc and msg.startswith(ENV_PREFIX):
        setting = msg.split(" ", 1)[0]
        return setting, msg
    return setting, f"{setting}: {msg}"


class _FileFirstSettings(Settings):
    """Settings whose env file wins over the process environment (``s3sync run --env-file``)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, dotenv_settings, env_settings, file_secret_settings


def resolve_folders(settings: Settings) -> Settings:
    """``settings`` with ``S3_LOCAL_PATH`` and ``S3_UPLOAD_DIR_PATH`` resolved to the real folders.

    An admin's ``/srv/mirror -> /data/mirror`` is followed once, here (at start and at each
    reload), and s3sync then works inside ``/data/mirror``; symlinks *inside* the folders are
    still never followed. A path that does not exist yet resolves as far as it exists.
    """
    real = {name: Path(os.path.realpath(getattr(settings, name))) for name in ("local_path", "upload_dir_path")}
    changed = {name: path for name, path in real.items() if path != getattr(settings, name)}
    return settings.model_copy(update=changed) if changed else settings


def load_settings(
    env_file: str | os.PathLike[str] | None = ".env",
    *,
    environ: Mapping[str, str] | None = None,
    file_wins: bool = False,
    **overrides: Any,
) -> Settings:
    """Build :class:`Settings` from the environment, ``env_file`` and overrides.

    Translates every validation problem into one :class:`ConfigurationError` whose
    message names the setting (``S3_CATEGORY_MAP: must be a JSON object...``) and never
    echoes the value. A missing ``env_file`` other than the default ``.env`` is an error.

    ``file_wins`` puts ``env_file`` above the environment (``s3sync run --env-file``): the
    daemon re-reads the file at each reload, and a value changed or removed there must take
    effect, not be shadowed by the environment the process started with (the systemd unit's
    ``Environment=`` lines are then defaults the file overrides).
    """
    env = os.environ if environ is None else environ
    if env_file is not None and os.fspath(env_file) != ".env" and not Path(env_file).is_file():
        raise ConfigurationError(f"--env-file: {os.fspath(env_file)!r} is not a readable file", setting="env_file")
    secrets_dir = env.get("CREDENTIALS_DIRECTORY") or None
    if secrets_dir is not None and not Path(secrets_dir).is_dir():
        secrets_dir = None
    try:
        env_path = os.fspath(env_file) if env_file is not None else None
        if file_wins and env_path is not None:
            built = _FileFirstSettings(_env_file=env_path, _secrets_dir=secrets_dir, **overrides)
            # Validated already: the same values as a plain Settings.
            return Settings.model_construct(_fields_set=built.model_fields_set, **dict(built))
        return Settings(_env_file=env_path, _secrets_dir=secrets_dir, **overrides)
    except ValidationError as exc:
        problems = _describe_all(exc)
        setting = problems[0][0]
        message = "; ".join(m for _, m in problems)
        raise ConfigurationError(message, setting=setting, problems=problems) from None
    except SettingsError as exc:
        # pydantic-settings could not decode a complex value (a JSON map) from the environment.
        match = re.search(r'field "(\w+)"', str(exc))
        setting = ENV_PREFIX + match.group(1).upper() if match else "settings"
        raise ConfigurationError(f"{setting}: could not be parsed (expected JSON)", setting=setting) from None
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigurationError(f"settings: cannot read configuration ({type(exc).__name__})") from None


_default_factory: Callable[[], Settings] | None = None


def set_default_settings_factory(factory: Callable[[], Settings] | None) -> None:
    """Choose where ``Resource(name)``, ``Transport()`` and ``Browser()`` find settings when given none.

    By default that is :func:`load_settings` (the environment and ``.env``). A framework
    integration registers its own source once at start-up, as ``s3sync.contrib.django`` does
    with the Django settings; ``None`` restores the default. Code that has a
    :class:`Settings` object should pass it explicitly instead.
    """
    global _default_factory  # one process-wide registration point, set once at start-up
    _default_factory = factory


def default_settings() -> Settings:
    """The settings for objects built without any: the registered factory, else :func:`load_settings`."""
    factory = _default_factory
    return factory() if factory is not None else load_settings()
