"""The one base of every error a user can cause: bad input, a missing file, a refused setting.

`cli.main` catches `EmOrganismsError` once and prints its message as one line (what, where, how to
fix); `em-organisms --debug ...` shows the traceback instead. Each stage's error class also keeps
its builtin base (ValueError, RuntimeError), so older callers still catch it.

Exit statuses, as argparse and `git` use them: 2 when the input is wrong (a file, a field, a flag:
fix it and rerun), 1 when the input was fine but the run did not succeed (`RunFailed`: too many
judge replies failed, a remote refused). A check command that finds problems (`data validate`)
exits 1 too: that is its answer, not an error of the command.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError


class EmOrganismsError(Exception):
    """Something the user can fix; the message says what, where and how."""

    exit_status = 2


class RunFailed(EmOrganismsError):
    """The input was good, but the run did not succeed; what it finished is kept."""

    exit_status = 1


def describe_validation_error(
    source: str, what: str, err: ValidationError, model: type[BaseModel]
) -> str:
    """One message for every strict config and artifact: `SOURCE: invalid WHAT`, then one line
    per problem naming the key (an unknown key lists the keys allowed where it stands)."""
    lines = [f"{source}: invalid {what}"]
    for problem in err.errors():
        loc = tuple(problem["loc"])
        if problem["type"] == "extra_forbidden":
            shown, parents = _walk(model, loc[:-1])
            where = ".".join([*shown, str(loc[-1])])
            allowed = sorted({name for parent in parents for name in parent.model_fields})
            hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  unknown key '{where}'{hint}")
        else:
            shown, _ = _walk(model, loc)
            lines.append(f"  {'.'.join(shown) or '<root>'}: {problem['msg']}")
    return "\n".join(lines)


def _walk(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[list[str], list[type[BaseModel]]]:
    """The location as the user wrote it (pydantic's union tags dropped) and the models that
    can stand there."""
    shown: list[str] = []
    models: list[type[BaseModel]] = [model]
    keyed = False  # the previous field was a mapping: this part is one of its keys
    for part in loc:
        if keyed or isinstance(part, int):
            shown.append(str(part))
            keyed = False
            continue
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        if fields:
            shown.append(str(part))
            models, keyed = _models_in(fields[0].annotation)
            continue
        tagged = [m for m in models if _has_tag(m, part)]
        if tagged:  # the discriminator value pydantic puts into the path; not the user's key
            models = tagged
            continue
        shown.append(str(part))
        models = []
    return shown, models


def _models_in(annotation: Any) -> tuple[list[type[BaseModel]], bool]:
    """The models an annotation can hold (through Optional, unions, lists and dict values) and
    whether the next path part is a mapping key."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation], False
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _models_in(args[0])
    if origin in (dict, Mapping):
        inner, _ = _models_in(args[1]) if len(args) == 2 else ([], False)
        return inner, True
    models: list[type[BaseModel]] = []
    for arg in args:
        models += _models_in(arg)[0]
    return models, False


def _has_tag(model: type[BaseModel], tag: Any) -> bool:
    return any(
        get_origin(field.annotation) is Literal and get_args(field.annotation) == (tag,)
        for field in model.model_fields.values()
    )
