"""JSON Schema -> ipywidgets: the launch form's fields, built from a kind's schema alone.

The mapping is pure and testable: `field_specs(schema)` reads each property into a
`FieldSpec`; `make_field(spec)` gives a `FieldWidget` (an input plus label, help text and
an error line) whose `value` reads and writes plain JSON values; `SchemaForm` lays the
fields out in one collapsible section per group and turns the server's validation errors
(`[{field, message, allowed}]`) into messages next to the fields they name. A new option
in a config model therefore appears in the form with no UI code.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as W

#: Widget kinds a field maps to.
FIELD_KINDS = (
    "const", "bool", "int", "float", "str", "password", "enum", "dict", "list_str", "list_int_or_const",
    "list_obj", "json",
)

@dataclass
class FieldSpec:
    """What the form needs to know about one schema property."""

    name: str
    kind: str
    title: str
    group: str
    description: str = ""
    default: Any = None
    has_default: bool = False
    required: bool = False
    nullable: bool = False
    choices: list[Any] = field(default_factory=list)
    const: Any = None
    read_only: bool = False
    secret: bool = False
    overrides: list[str] = field(default_factory=list)  # the fields this one replaces when set (the schema says)
    item_schema: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if not ref or not ref.startswith("#/"):
        return node
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    merged = dict(target)
    merged.update({k: v for k, v in node.items() if k != "$ref"})
    return merged


def _classify(prop: dict[str, Any], root: dict[str, Any]) -> tuple[str, bool, list[Any], Any, dict[str, Any] | None]:
    """(kind, nullable, choices, const, item_schema) of one property."""
    options = prop.get("anyOf") or prop.get("oneOf")
    nullable = False
    if options:
        branches = [_resolve(o, root) for o in options]
        non_null = [b for b in branches if b.get("type") != "null"]
        nullable = len(non_null) < len(branches)
        if len(non_null) == 1:
            merged = {**prop, **non_null[0]}
            merged.pop("anyOf", None)
            merged.pop("oneOf", None)
            kind, _, choices, const, item = _classify(merged, root)
            return kind, nullable, choices, const, item
        consts = [b for b in non_null if "const" in b]
        arrays = [b for b in non_null if b.get("type") == "array"]
        if consts and arrays and len(consts) + len(arrays) == len(non_null):
            return "list_int_or_const", nullable, [c["const"] for c in consts], None, arrays[0].get("items")
        return "json", nullable, [], None, None
    if "const" in prop:
        return "const", False, [prop["const"]], prop["const"], None
    if "enum" in prop:
        return "enum", False, list(prop["enum"]), None, None
    typ = prop.get("type")
    if prop.get("format") == "password" or prop.get("secret"):
        return "password", False, [], None, None
    if typ == "boolean":
        return "bool", False, [], None, None
    if typ == "integer":
        return "int", False, [], None, None
    if typ == "number":
        return "float", False, [], None, None
    if typ == "string":
        return "str", False, [], None, None
    if typ == "object" and isinstance(prop.get("additionalProperties"), dict) and not prop.get("properties"):
        return "dict", False, [], None, None
    if typ == "array":
        items = _resolve(prop.get("items") or {}, root)
        if items.get("type") == "object" or items.get("properties"):
            return "list_obj", False, [], None, items
        if items.get("type") == "string":
            return "list_str", False, [], None, items
    return "json", False, [], None, None


def field_specs(schema: dict[str, Any], root: dict[str, Any] | None = None) -> list[FieldSpec]:
    """One `FieldSpec` per property of an object schema, in declaration order."""
    root = root or schema
    required = set(schema.get("required", []))
    specs = []
    for name, raw in schema.get("properties", {}).items():
        prop = _resolve(raw, root)
        kind, nullable, choices, const, item = _classify(prop, root)
        if prop.get("secret") or prop.get("format") == "password":
            kind = "password"
        specs.append(
            FieldSpec(
                name=name,
                kind=kind,
                title=prop.get("title") or name.replace("_", " ").capitalize(),
                group=prop.get("group") or "General",
                description=prop.get("description", ""),
                default=prop.get("default"),
                has_default="default" in prop,
                required=name in required,
                nullable=nullable,
                choices=choices,
                const=const,
                read_only=bool(prop.get("readOnly")) or kind == "const",
                secret=bool(prop.get("secret")),
                overrides=[str(n) for n in prop.get("overrides") or [] if isinstance(prop.get("overrides"), list)],
                item_schema=item,
                raw=prop,
            )
        )
    return specs


def grouped(specs: list[FieldSpec], order: list[str] | tuple[str, ...] = ()) -> list[tuple[str, list[FieldSpec]]]:
    """Specs grouped by `group`, groups in `order` first, then in first-seen order."""
    groups: dict[str, list[FieldSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.group, []).append(spec)
    names = [g for g in order if g in groups] + [g for g in groups if g not in order]
    return [(g, groups[g]) for g in names]


def overridden_fields(specs: list[FieldSpec]) -> dict[str, list[str]]:
    """For each field whose schema lists `overrides` (llama.cpp's `cli_args`), the fields it greys out when set."""
    names = {s.name for s in specs}
    return {s.name: [n for n in s.overrides if n in names and n != s.name] for s in specs if s.overrides}


# Field widgets ---------------------------------------------------------------------------


class FieldWidget:
    """One form field: input widget, label, help text, error line; `value` is plain JSON."""

    def __init__(self, spec: FieldSpec):
        self.spec = spec
        self.input = self._make_input()
        self.input.description_allow_html = False
        self.input.layout.width = "auto"
        self.input.layout.flex = "1 1 auto"
        label = spec.title + (" *" if spec.required else "")
        self.label = W.HTML(
            f"<b title='{html.escape(spec.name)}'>{html.escape(label)}</b>",
            layout=W.Layout(width="200px", min_width="200px"),
        )
        self.help = W.HTML(
            f"<span style='color:var(--jp-ui-font-color2,#666);font-size:90%'>{html.escape(spec.description)}</span>"
        )
        self.error = W.HTML("", layout=W.Layout(display="none"))
        self.error.add_class("modeldeploy-field-error")
        row = W.HBox([self.label, self.input], layout=W.Layout(width="100%", align_items="center"))
        self.container = W.VBox([row, self.help, self.error], layout=W.Layout(margin="0 0 6px 0"))
        self.container.add_class("modeldeploy-field")
        self.container.add_class(f"modeldeploy-field-{spec.name}")
        self._disabled_by: set[str] = set()
        if spec.read_only:
            self.input.disabled = True
        self.reset()

    # Subclass hooks
    def _make_input(self) -> W.Widget:
        return W.Text()

    def _read(self) -> Any:
        text = self.input.value.strip()
        if text == "" and self.spec.nullable:
            return None
        return self.input.value

    def _write(self, value: Any) -> None:
        self.input.value = "" if value is None else str(value)

    # Public API
    @property
    def value(self) -> Any:
        """The field's JSON value (None for an empty optional field)."""
        return self._read()

    @value.setter
    def value(self, value: Any) -> None:
        self._write(value)

    def is_set(self) -> bool:
        """Whether the field contributes a value to the configuration (an empty secret does not)."""
        return not self.spec.secret or self._read() not in (None, "")

    def reset(self) -> None:
        """Back to the schema default (empty when there is none)."""
        default = self.spec.default if self.spec.has_default else None
        if self.spec.kind == "const":
            default = self.spec.const
        self._write(default)
        self.set_error(None)

    def set_error(self, message: str | None) -> None:
        """Show (or clear) a validation message under the field."""
        if message:
            self.error.value = (
                f"<span style='color:var(--jp-error-color1,#c62828)'>&#9888; {html.escape(message)}</span>"
            )
            self.error.layout.display = ""
            self.container.add_class("modeldeploy-invalid")
        else:
            self.error.value = ""
            self.error.layout.display = "none"
            self.container.remove_class("modeldeploy-invalid")

    def set_disabled(self, disabled: bool, reason: str = "") -> None:
        """Grey the field out (another field overrides it), or enable it again."""
        if disabled:
            self._disabled_by.add(reason)
        else:
            self._disabled_by.discard(reason)
        self.input.disabled = bool(self._disabled_by) or self.spec.read_only
        self.container.layout.opacity = "0.45" if self._disabled_by else "1"

    @property
    def disabled(self) -> bool:
        return bool(self.input.disabled)

    def has_error(self) -> bool:
        """Whether an error is shown on this field (or, for a list, on one of its items)."""
        return bool(self.error.value)


class ConstField(FieldWidget):
    """A fixed value (kind, schema version): part of the configuration, not shown (the kind has its selector)."""

    def __init__(self, spec: FieldSpec):
        super().__init__(spec)
        self.container.layout.display = "none"

    def _read(self) -> Any:
        return self.spec.const

    def _write(self, value: Any) -> None:
        self.input.value = str(self.spec.const)


class BoolField(FieldWidget):
    """A checkbox."""

    def _make_input(self) -> W.Widget:
        return W.Checkbox(indent=False)

    def _read(self) -> Any:
        return bool(self.input.value)

    def _write(self, value: Any) -> None:
        self.input.value = bool(value)


class NumberField(FieldWidget):
    """An integer or float; optional numbers are text so that empty means 'not set'."""

    def _make_input(self) -> W.Widget:
        if self.spec.nullable:
            return W.Text(placeholder="empty: not set")
        return W.IntText() if self.spec.kind == "int" else W.FloatText()

    def _read(self) -> Any:
        if not self.spec.nullable:
            return self.input.value
        text = self.input.value.strip()
        if text == "":
            return None
        try:
            number = float(text)
        except ValueError:
            return text  # the server names the field and says why
        if self.spec.kind == "int":
            return int(number) if number.is_integer() else number
        return number

    def _write(self, value: Any) -> None:
        if self.spec.nullable:
            self.input.value = "" if value is None else str(value)
        else:
            zero = 0 if self.spec.kind == "int" else 0.0
            self.input.value = zero if value is None else value


class TextField(FieldWidget):
    """A string; long or raw-argument strings get a wider box."""

    def _read(self) -> Any:
        text = self.input.value
        if text.strip() == "" and self.spec.nullable:
            return None
        return text


class PasswordField(FieldWidget):
    """A secret: typed masked, left out of the configuration when empty."""

    def _make_input(self) -> W.Widget:
        return W.Password(placeholder="not set")

    def _read(self) -> Any:
        return self.input.value or None


class EnumField(FieldWidget):
    """A choice from the schema's enum (plus 'empty' for an optional field)."""

    def _make_input(self) -> W.Widget:
        options: list[tuple[str, Any]] = [(str(c), c) for c in self.spec.choices]
        if self.spec.nullable:
            options.insert(0, ("(empty)", None))
        return W.Dropdown(options=options)

    def _read(self) -> Any:
        return self.input.value

    def _write(self, value: Any) -> None:
        values = [v for _, v in self.input.options]
        if value in values:
            self.input.value = value
        elif value is not None:
            # An imported value the schema does not list: offer it so the server can name it.
            self.input.options = [*self.input.options, (str(value), value)]
            self.input.value = value
        elif values:
            self.input.value = values[0]


class DictField(FieldWidget):
    """A string -> string mapping, one `KEY=value` per line."""

    def _make_input(self) -> W.Widget:
        return W.Textarea(placeholder="KEY=value, one per line", rows=2)

    def _read(self) -> Any:
        result: dict[str, str] = {}
        for line in self.input.value.splitlines():
            if not line.strip():
                continue
            key, sep, val = line.partition("=")
            result[key.strip()] = val if sep else ""
        return result

    def _write(self, value: Any) -> None:
        value = value or {}
        self.input.value = "\n".join(f"{k}={v}" for k, v in value.items())


class ListStrField(FieldWidget):
    """A list of strings, one per line."""

    def _make_input(self) -> W.Widget:
        return W.Textarea(placeholder="one per line", rows=2)

    def _read(self) -> Any:
        return [line.strip() for line in self.input.value.splitlines() if line.strip()]

    def _write(self, value: Any) -> None:
        self.input.value = "\n".join(str(v) for v in (value or []))


class ConstOrListField(FieldWidget):
    """A keyword (such as 'auto') or a list of integers written `0,1`."""

    def _make_input(self) -> W.Widget:
        hint = " or ".join(repr(c) for c in self.spec.choices)
        return W.Text(placeholder=f"{hint}, or a list such as 0,1")

    def _read(self) -> Any:
        text = self.input.value.strip()
        if text in [str(c) for c in self.spec.choices]:
            return next(c for c in self.spec.choices if str(c) == text)
        if text == "":
            return None if self.spec.nullable else []
        try:
            parsed = json.loads(text if text.startswith("[") else f"[{text}]")
        except ValueError:
            return text
        return parsed

    def _write(self, value: Any) -> None:
        if isinstance(value, list):
            self.input.value = ",".join(str(v) for v in value)
        else:
            self.input.value = "" if value is None else str(value)


class JsonField(FieldWidget):
    """Anything else, typed as JSON."""

    def _make_input(self) -> W.Widget:
        return W.Textarea(placeholder="JSON", rows=2)

    def _read(self) -> Any:
        text = self.input.value.strip()
        if text == "":
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text

    def _write(self, value: Any) -> None:
        self.input.value = "" if value is None else json.dumps(value)


class ObjectListField(FieldWidget):
    """A list of objects (embedding models): one sub-form per item, '+ Add item', 'Remove'."""

    def __init__(self, spec: FieldSpec, root: dict[str, Any] | None = None):
        self.root = root or {}
        self.items: list[FieldSet] = []
        super().__init__(spec)

    def _make_input(self) -> W.Widget:
        self.add_button = W.Button(description="+ Add item", icon="plus", layout=W.Layout(width="140px"))
        self.add_button.add_class("modeldeploy-add-item")
        self.add_button.on_click(lambda _: self.add_item())
        self.item_box = W.VBox([])
        return W.VBox([self.item_box, self.add_button])

    def add_item(self, value: dict[str, Any] | None = None) -> FieldSet:
        """Append one item (filled from `value`, else defaults) and return its fields."""
        item = FieldSet(field_specs(self.spec.item_schema or {}, self.root), self.root)
        if value:
            item.set_value(value)
        remove = W.Button(description="Remove", icon="trash", layout=W.Layout(width="110px"))
        title = W.HTML(f"<b>{html.escape(self.spec.title)} #{len(self.items) + 1}</b>")
        box = W.VBox(
            [W.HBox([title, remove]), *[f.container for f in item.fields.values()]],
            layout=W.Layout(border="1px solid var(--jp-border-color2,#ccc)", padding="4px", margin="2px 0"),
        )
        item.box = box
        remove.on_click(lambda _, it=item: self.remove_item(it))
        self.items.append(item)
        self.item_box.children = [*self.item_box.children, box]
        return item

    def remove_item(self, item: FieldSet) -> None:
        """Drop one item."""
        self.items.remove(item)
        self.item_box.children = [it.box for it in self.items]

    def _read(self) -> Any:
        return [item.value() for item in self.items]

    def _write(self, value: Any) -> None:
        self.items = []
        self.item_box.children = []
        for entry in value or []:
            self.add_item(entry if isinstance(entry, dict) else {})
        if not self.items and self.spec.required:
            self.add_item()

    def set_item_error(self, index: int, path: str, message: str) -> bool:
        """Show an error on a field of one item; False when there is no such field."""
        if 0 <= index < len(self.items):
            return self.items[index].set_error(path, message)
        return False

    def clear_errors(self) -> None:
        for item in self.items:
            item.clear_errors()

    def has_error(self) -> bool:
        return bool(self.error.value) or any(f.has_error() for item in self.items for f in item.fields.values())

    def set_disabled(self, disabled: bool, reason: str = "") -> None:
        super().set_disabled(disabled, reason)
        self.add_button.disabled = self.input.disabled


_FIELD_CLASSES: dict[str, type[FieldWidget]] = {
    "const": ConstField,
    "bool": BoolField,
    "int": NumberField,
    "float": NumberField,
    "str": TextField,
    "password": PasswordField,
    "enum": EnumField,
    "dict": DictField,
    "list_str": ListStrField,
    "list_int_or_const": ConstOrListField,
    "json": JsonField,
}


def make_field(spec: FieldSpec, root: dict[str, Any] | None = None) -> FieldWidget:
    """The field widget for one spec."""
    if spec.kind == "list_obj":
        return ObjectListField(spec, root)
    return _FIELD_CLASSES.get(spec.kind, JsonField)(spec)


class FieldSet:
    """The fields of one object schema, with value get/set and error routing."""

    def __init__(self, specs: list[FieldSpec], root: dict[str, Any] | None = None):
        self.specs = specs
        self.fields: dict[str, FieldWidget] = {s.name: make_field(s, root) for s in specs}
        self.box: W.Widget | None = None

    def value(self, *, include_secrets: bool = True) -> dict[str, Any]:
        """The configuration: every field's value, empty secrets (and, if asked, all secrets) left out."""
        result = {}
        for name, f in self.fields.items():
            if f.spec.secret and (not include_secrets or not f.value):
                continue
            if not f.is_set():
                continue
            result[name] = f.value
        return result

    def set_value(self, data: dict[str, Any], *, reset: bool = True) -> list[str]:
        """Fill the fields from a configuration; returns the keys no field knows."""
        if reset:
            for f in self.fields.values():
                f.reset()
        unknown = []
        for key, value in data.items():
            if key in self.fields:
                self.fields[key].value = value
            else:
                unknown.append(key)
        return unknown

    def clear_errors(self) -> None:
        for f in self.fields.values():
            f.set_error(None)
            if isinstance(f, ObjectListField):
                f.clear_errors()

    def set_error(self, path: str, message: str) -> bool:
        """Show an error at a dotted field path (`models.0.pooling`); False if nothing matches."""
        head, _, rest = path.partition(".")
        f = self.fields.get(head)
        if f is None:
            return False
        if rest and isinstance(f, ObjectListField):
            index, _, sub = rest.partition(".")
            if index.isdigit() and sub and f.set_item_error(int(index), sub, message):
                return True
        f.set_error(message if not rest else f"{rest}: {message}")
        return True


def describe_error(error: dict[str, Any]) -> str:
    """One line from a `{field, message, allowed}` validation error."""
    message = str(error.get("message", "invalid"))
    allowed = error.get("allowed")
    if allowed and "allowed" not in message:
        if isinstance(allowed, (list, tuple)):
            allowed = ", ".join(map(str, allowed))
        message += f" (allowed: {allowed})"
    return message


class SchemaForm(FieldSet):
    """A whole launch form for one kind: a collapsible section per group, errors by field."""

    def __init__(self, schema: dict[str, Any]):
        self.schema = schema
        super().__init__(field_specs(schema), schema)
        self.groups = grouped(self.specs, schema.get("x-group-order", ()))
        sections = [W.VBox([self.fields[s.name].container for s in specs]) for _, specs in self.groups]
        self.accordion = W.Accordion(children=sections, titles=tuple(g for g, _ in self.groups),
                                     layout=W.Layout(width="100%", max_width="960px"))
        self.accordion.selected_index = 0 if sections else None
        self.message = W.HTML("")
        self.message.add_class("modeldeploy-form-message")
        self.widget = W.VBox([self.accordion, self.message], layout=W.Layout(width="100%"))
        self.overrides = overridden_fields(self.specs)
        for source in self.overrides:
            self.fields[source].input.observe(lambda _, s=source: self._apply_overrides(s), names="value")
            self._apply_overrides(source)

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call `callback` whenever a top-level field's value changes."""
        for f in self.fields.values():
            if f.input.has_trait("value"):
                f.input.observe(lambda _: callback(), names="value")

    def _apply_overrides(self, source: str) -> None:
        active = bool(self.fields[source].value)
        for name in self.overrides[source]:
            self.fields[name].set_disabled(active, reason=source)
        if active:
            self.fields[source].help.value = (
                "<span style='color:var(--jp-warn-color1,#e65100);font-size:90%'>"
                f"{html.escape(self.fields[source].spec.description)} Greyed-out fields are ignored.</span>"
            )
        else:
            self.fields[source].help.value = (
                "<span style='color:var(--jp-ui-font-color2,#666);font-size:90%'>"
                f"{html.escape(self.fields[source].spec.description)}</span>"
            )

    @property
    def kind(self) -> str | None:
        f = self.fields.get("kind")
        return f.value if f is not None else None

    def export_value(self) -> dict[str, Any]:
        """The configuration as an export: no secrets."""
        return self.value(include_secrets=False)

    def show_errors(self, errors: list[dict[str, Any]], summary: str | None = None) -> list[dict[str, Any]]:
        """Put each error next to its field; the rest (and `summary`) go to the form's message line.

        Returns the errors no field took.
        """
        self.clear_errors()
        leftover = [e for e in errors if not self.set_error(str(e.get("field", "")), describe_error(e))]
        lines = [summary] if summary else []
        lines += [f"{e.get('field', '')}: {describe_error(e)}" for e in leftover]
        self.show_message("<br>".join(html.escape(x) for x in lines), error=True)
        wrong = [any(self.fields[s.name].has_error() for s in specs) for _, specs in self.groups]
        self.accordion.titles = tuple(f"⚠ {g}" if bad else g for (g, _), bad in zip(self.groups, wrong, strict=True))
        if any(wrong):
            self.accordion.selected_index = wrong.index(True)
        return leftover

    def show_message(self, text_html: str, *, error: bool = False) -> None:
        """A line under the form (HTML)."""
        color = "var(--jp-error-color1,#c62828)" if error else "var(--jp-success-color1,#2e7d32)"
        self.message.value = f"<div style='color:{color}'>{text_html}</div>" if text_html else ""

    def clear_errors(self) -> None:
        super().clear_errors()
        self.message.value = ""
        self.accordion.titles = tuple(g for g, _ in self.groups)
