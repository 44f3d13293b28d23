"""Which variant a user means: an id, a unique name, or `NAME@ALIAS`, a registered model's alias in the MLflow
registry (`minilm-l6@production`), resolved to the variant the alias points at when it is asked.

The one resolver the playground (predict, batch, A/B, traffic split) and the CLI use, so an alias works wherever a
variant id does. A reference is read as an alias only when it looks like one (a registry name, `@`, an alias);
anything else is looked up in the catalog as before.
"""

from __future__ import annotations

from jobs.tracking.model_registry import (
    ALIAS_RE,
    NAME_RE,
    TAG,
    _client,
    _mlflow_errors,
    _model_version,
    _registered_model,
)
from storage import catalog
from storage.entities import Variant
from storage.errors import NotFound


def parse_alias(ref: int | str) -> tuple[str, str] | None:
    """(registered model name, alias) when `ref` reads `NAME@ALIAS`, else None."""
    name, at, alias = str(ref).strip().rpartition("@")
    if not at or not NAME_RE.match(name.strip()) or not ALIAS_RE.match(alias.strip()):
        return None
    return name.strip(), alias.strip()


@_mlflow_errors
def alias_target(name: str, alias: str) -> tuple[str, int, str]:
    """(version, variant id, the variant's sha256 as registered) that `name@alias` points at now."""
    client = _client()
    model = _registered_model(client, name)
    aliases = {a: str(v) for a, v in (model.aliases or {}).items()}
    if alias not in aliases:
        known = f"its aliases: {', '.join(sorted(aliases))}" if aliases else "it has none yet (promote a version)"
        raise NotFound(f"registered model {name!r} has no alias {alias!r}; {known}", what="registered model")
    version = aliases[alias]
    tags = _model_version(client, name, version).tags or {}
    variant_id = tags.get(f"{TAG}variant_id", "")
    if not variant_id.isdigit():
        raise NotFound(f"{name}@{alias} is version {version}, which was not registered from a workbench variant")
    return version, int(variant_id), tags.get("sha256", "")


def resolve_variant(ref: int | str) -> Variant:
    """The variant `ref` names: an id or name from the catalog, or the one a registry alias points at."""
    parsed = parse_alias(ref) if isinstance(ref, str) else None
    if parsed is None:
        return catalog.get_variant(ref)
    name, alias = parsed
    version, variant_id, sha256 = alias_target(name, alias)
    try:
        variant = catalog.get_variant(variant_id)
    except NotFound:
        raise NotFound(f"{name}@{alias} is version {version}, variant {variant_id}, which this workbench does not "
                       "have (registered from another workbench?)") from None
    if sha256 and variant.sha256 != sha256:
        raise NotFound(f"{name}@{alias} is version {version}, registered from a variant {variant_id} with other files "
                       f"than this workbench's variant {variant_id} (another workbench's registry?)")
    return variant
