#!/usr/bin/env python3
"""Turns rustdoc's JSON output for the crate into a sorted listing of its
public API: one line per public item, reachable path first, with signatures,
fields, variants, trait implementations and the attributes that matter to
users (`#[non_exhaustive]`). Used by `.ci/public-api`.

    python3 .ci/public_api.py target/doc/kms_activation.json > public-api.txt

Items hidden from the docs (`#[doc(hidden)]`) do not appear: rustdoc leaves
them out. Blanket implementations (`impl<T> From<T> for T`, …) are left out
as noise; auto-trait implementations (Send, Sync, Unpin, …) are kept, since
losing one breaks users.
"""

import json
import sys

# Auto and marker traits that only say what the compiler derived.
INTERNAL_TRAITS = {"Freeze", "UnsafeUnpin", "StructuralPartialEq"}


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        doc = json.load(f)
    lister = Lister(doc)
    root = [doc["index"][str(doc["root"])]["name"]]
    # The first pass learns every item's public path, the second renders
    # with them, so that a type is named the same wherever it appears.
    lister.walk_module(doc["root"], root)
    lister.settle_paths()
    lister.lines, lister.seen = [], set()
    lister.walk_module(doc["root"], root)
    for _, _, line in sorted(set(lister.lines)):
        print(line)


class Lister:
    def __init__(self, doc):
        self.index = doc["index"]
        self.paths = doc["paths"]
        self.lines = []
        # Local id -> [(reached through a `pub use`, path)], in walk order.
        self.reached = {}
        # Local id -> the path it is listed under (after the first pass).
        self.public_path = {}
        self.seen = set()

    def settle_paths(self):
        """Names every item by the first path that reaches it without a
        re-export, else by its first re-export."""
        for id_, ways in self.reached.items():
            direct = [path for via_use, path in ways if not via_use]
            self.public_path[id_] = (direct or [path for _, path in ways])[0]

    def item(self, id_):
        return self.index.get(str(id_))

    # ---- walking --------------------------------------------------------

    def walk_module(self, id_, path):
        module = self.item(id_)
        if module is None:
            return
        key = (id_, tuple(path))
        if key in self.seen:
            return
        self.seen.add(key)
        self.add("::".join(path), "pub mod " + "::".join(path))
        for child in module["inner"]["module"]["items"]:
            self.walk_child(child, path)

    def walk_child(self, id_, path):
        item = self.item(id_)
        if item is None or item["visibility"] != "public":
            return
        kind, inner = next(iter(item["inner"].items()))
        if kind == "use":
            self.walk_use(inner, path)
            return
        self.emit(id_, item, path + [item["name"]], via_use=False)

    def walk_use(self, use, path):
        target = self.item(use["id"]) if use["id"] is not None else None
        if use["is_glob"]:
            if target is not None and "module" in target["inner"]:
                for child in target["inner"]["module"]["items"]:
                    self.walk_child(child, path)
            else:
                self.add("::".join(path), f"pub use {'::'.join(path)}::* = {use['source']}::*")
            return
        if target is None:
            # An item of another crate, re-exported.
            name = "::".join(path + [use["name"]])
            self.add(name, f"pub use {name} = {use['source']}")
            return
        self.emit(use["id"], target, path + [use["name"]], via_use=True)

    def emit(self, id_, item, path, via_use):
        kind, inner = next(iter(item["inner"].items()))
        name = "::".join(path)
        self.reached.setdefault(id_, []).append((via_use, name))
        listed = self.public_path.get(id_)
        if listed is not None and listed != name and kind != "module":
            # Another path of an item listed in full under `listed`.
            self.add(name, f"pub use {name} = {listed}")
            return
        attrs = self.attrs(item)
        if kind == "module":
            self.walk_module(id_, path)
        elif kind == "struct":
            self.emit_struct(name, inner, attrs)
        elif kind == "enum":
            self.emit_enum(name, inner, attrs)
        elif kind == "union":
            self.add(name, f"{attrs}pub union {name}{self.generics(inner['generics'])}")
            self.emit_impls(name, inner["impls"])
        elif kind == "trait":
            self.emit_trait(name, inner, attrs)
        elif kind == "function":
            self.add(name, attrs + self.function(name, inner))
        elif kind == "constant":
            const = inner["const"]
            value = const["value"] or const["expr"]
            self.add(name, f"{attrs}pub const {name}: {self.ty(inner['type'])} = {value}")
        elif kind == "static":
            mutable = "mut " if inner.get("is_mutable") else ""
            self.add(name, f"{attrs}pub static {mutable}{name}: {self.ty(inner['type'])}")
        elif kind == "type_alias":
            generics = self.generics(inner["generics"])
            self.add(name, f"{attrs}pub type {name}{generics} = {self.ty(inner['type'])}")
        elif kind in ("macro", "proc_macro"):
            self.add(name, f"pub macro {name}!")
        else:
            self.add(name, f"pub {kind} {name}")

    def emit_struct(self, name, inner, attrs):
        generics = self.generics(inner["generics"])
        where = self.where_clause(inner["generics"])
        struct_kind = inner["kind"]
        if struct_kind == "unit":
            self.add(name, f"{attrs}pub struct {name}{generics}{where}")
        elif "tuple" in struct_kind:
            fields = [
                self.ty(self.item(f)["inner"]["struct_field"]) if f is not None else "_"
                for f in struct_kind["tuple"]
            ]
            self.add(name, f"{attrs}pub struct {name}{generics}({', '.join(fields)}){where}")
        else:
            self.add(name, f"{attrs}pub struct {name}{generics}{where}")
            for field_id in struct_kind["plain"]["fields"]:
                field = self.item(field_id)
                if field is not None and field["visibility"] == "public":
                    field_type = self.ty(field["inner"]["struct_field"])
                    self.add(name, f"pub {name}::{field['name']}: {field_type}", 1)
        self.emit_impls(name, inner["impls"])

    def emit_enum(self, name, inner, attrs):
        generics = self.generics(inner["generics"])
        self.add(name, f"{attrs}pub enum {name}{generics}{self.where_clause(inner['generics'])}")
        for variant_id in inner["variants"]:
            variant = self.item(variant_id)
            if variant is None:
                continue
            vattrs = self.attrs(variant)
            vkind = variant["inner"]["variant"]["kind"]
            vname = f"{name}::{variant['name']}"
            if vkind == "plain":
                self.add(name, f"{vattrs}pub {vname}", 1)
            elif "tuple" in vkind:
                fields = [
                    self.ty(self.item(f)["inner"]["struct_field"]) if f is not None else "_"
                    for f in vkind["tuple"]
                ]
                self.add(name, f"{vattrs}pub {vname}({', '.join(fields)})", 1)
            else:
                self.add(name, f"{vattrs}pub {vname} {{ .. }}", 1)
                for field_id in vkind["struct"]["fields"]:
                    field = self.item(field_id)
                    if field is not None:
                        field_type = self.ty(field["inner"]["struct_field"])
                        self.add(name, f"pub {vname}::{field['name']}: {field_type}", 1)
        self.emit_impls(name, inner["impls"])

    def emit_trait(self, name, inner, attrs):
        generics = self.generics(inner["generics"])
        bounds = self.bounds(inner["bounds"])
        unsafe = "unsafe " if inner["is_unsafe"] else ""
        supertraits = f": {bounds}" if bounds else ""
        self.add(name, 
            f"{attrs}pub {unsafe}trait {name}{generics}{supertraits}{self.where_clause(inner['generics'])}"
        )
        for member_id in inner["items"]:
            self.emit_member(name, name, member_id, in_trait=True)
        for impl_id in inner["implementations"]:
            impl = self.item(impl_id)
            if impl is not None and self.listed_impl(impl["inner"]["impl"]):
                self.add(name, self.impl_header(impl["inner"]["impl"]), 3)

    def emit_impls(self, name, impl_ids):
        for impl_id in impl_ids:
            impl = self.item(impl_id)
            if impl is None:
                continue
            inner = impl["inner"]["impl"]
            if not self.listed_impl(inner):
                continue
            if inner["trait"] is None:
                members = [
                    m for m in inner["items"]
                    if self.item(m) is not None and self.item(m)["visibility"] == "public"
                ]
                if not members:
                    continue
                # The inherent impl's own bounds, then its members named
                # after the implemented type (`KmsHost<S>::start`).
                owner = self.ty(inner["for"])
                header = f"impl{self.generics(inner['generics'])} {owner}"
                self.add(name, header + self.where_clause(inner["generics"]), 2)
                for member_id in members:
                    self.emit_member(name, owner, member_id, in_trait=False)
            else:
                self.add(name, self.impl_header(inner), 3)

    def emit_member(self, key, owner, id_, in_trait):
        member = self.item(id_)
        if member is None:
            return
        kind, inner = next(iter(member["inner"].items()))
        name = f"{owner}::{member['name']}"
        attrs = self.attrs(member)
        prefix = "" if in_trait else "pub "
        if kind == "function":
            text = self.function(name, inner)
            self.add(key, attrs + (text if not in_trait else text.removeprefix("pub ")), 2)
        elif kind == "assoc_const":
            self.add(key, f"{attrs}{prefix}const {name}: {self.ty(inner['type'])}", 2)
        elif kind == "assoc_type":
            bounds = self.bounds(inner["bounds"])
            self.add(key, f"{attrs}type {name}{': ' + bounds if bounds else ''}", 2)

    def add(self, key, text, rank=0):
        """One line of the listing, sorted by the path of its item, then
        by rank: the item itself (0), its fields and variants (1), its
        methods (2), its trait implementations (3)."""
        self.lines.append((key, rank, text))

    def listed_impl(self, inner):
        """Leaves out blanket implementations and the compiler's internal
        marker traits, which change with the toolchain, not the crate."""
        if inner["blanket_impl"] is not None:
            return False
        trait = inner["trait"]
        return trait is None or trait["path"].rsplit("::", 1)[-1] not in INTERNAL_TRAITS

    def impl_header(self, inner):
        generics = self.generics(inner["generics"])
        negative = "!" if inner["is_negative"] else ""
        unsafe = "unsafe " if inner["is_unsafe"] else ""
        trait = self.path(inner["trait"])
        return (
            f"{unsafe}impl{generics} {negative}{trait} for {self.ty(inner['for'])}"
            f"{self.where_clause(inner['generics'])}"
        )

    # ---- rendering ------------------------------------------------------

    def attrs(self, item):
        out = []
        for attr in item["attrs"]:
            if attr == "non_exhaustive":
                out.append("#[non_exhaustive] ")
        return "".join(out)

    def function(self, name, inner):
        header = inner["header"]
        quals = ""
        if header["is_const"]:
            quals += "const "
        if header["is_async"]:
            quals += "async "
        if header["is_unsafe"]:
            quals += "unsafe "
        args = []
        for arg_name, arg_type in inner["sig"]["inputs"]:
            if arg_name == "self":
                args.append(self.self_arg(arg_type))
            else:
                args.append(f"{arg_name}: {self.ty(arg_type)}")
        output = inner["sig"]["output"]
        ret = f" -> {self.ty(output)}" if output is not None else ""
        generics = self.generics(inner["generics"])
        where = self.where_clause(inner["generics"])
        return f"pub {quals}fn {name}{generics}({', '.join(args)}){ret}{where}"

    def self_arg(self, ty):
        if ty == {"generic": "Self"}:
            return "self"
        if "borrowed_ref" in ty and ty["borrowed_ref"]["type"] == {"generic": "Self"}:
            ref = ty["borrowed_ref"]
            lifetime = f"{ref['lifetime']} " if ref["lifetime"] else ""
            return f"&{lifetime}{'mut ' if ref['is_mutable'] else ''}self"
        return f"self: {self.ty(ty)}"

    def generics(self, generics):
        params = []
        for param in generics["params"]:
            kind = param["kind"]
            if "lifetime" in kind:
                outlives = kind["lifetime"]["outlives"]
                params.append(param["name"] + (": " + " + ".join(outlives) if outlives else ""))
            elif "type" in kind:
                if kind["type"]["is_synthetic"]:
                    continue  # `impl Trait` in argument position
                bounds = self.bounds(kind["type"]["bounds"])
                default = kind["type"]["default"]
                text = param["name"] + (f": {bounds}" if bounds else "")
                if default is not None:
                    text += f" = {self.ty(default)}"
                params.append(text)
            elif "const" in kind:
                text = f"const {param['name']}: {self.ty(kind['const']['type'])}"
                if kind["const"]["default"] is not None:
                    text += f" = {kind['const']['default']}"
                params.append(text)
        return f"<{', '.join(params)}>" if params else ""

    def where_clause(self, generics):
        preds = []
        for pred in generics["where_predicates"]:
            if "bound_predicate" in pred:
                bp = pred["bound_predicate"]
                preds.append(f"{self.ty(bp['type'])}: {self.bounds(bp['bounds'])}")
            elif "lifetime_predicate" in pred:
                lp = pred["lifetime_predicate"]
                preds.append(f"{lp['lifetime']}: {' + '.join(lp['outlives'])}")
            elif "eq_predicate" in pred:
                ep = pred["eq_predicate"]
                preds.append(f"{self.ty(ep['lhs'])} = {self.term(ep['rhs'])}")
        return f" where {', '.join(preds)}" if preds else ""

    def bounds(self, bounds):
        out = []
        for bound in bounds:
            if "trait_bound" in bound:
                tb = bound["trait_bound"]
                modifier = {"none": "", "maybe": "?", "maybe_const": "~const "}.get(tb["modifier"], "")
                hrtb = ""
                if tb["generic_params"]:
                    names = ", ".join(p["name"] for p in tb["generic_params"])
                    hrtb = f"for<{names}> "
                out.append(f"{hrtb}{modifier}{self.path(tb['trait'])}")
            elif "outlives" in bound:
                out.append(bound["outlives"])
            elif "use" in bound:
                names = []
                for arg in bound["use"]:
                    if isinstance(arg, dict):
                        names.append(next(iter(arg.values())))
                    else:
                        names.append(str(arg))
                out.append(f"use<{', '.join(names)}>")
        return " + ".join(out)

    def term(self, term):
        if "type" in term:
            return self.ty(term["type"])
        return str(term.get("constant", term))

    def path_name(self, path):
        id_ = path.get("id")
        if id_ in self.public_path:
            return self.public_path[id_]
        summary = self.paths.get(str(id_)) if id_ is not None else None
        if summary is not None and summary["crate_id"] == 0:
            return "::".join(summary["path"])
        return path["path"]

    def path(self, path):
        return self.path_name(path) + self.generic_args(path.get("args"))

    def generic_args(self, args):
        if not args:
            return ""
        if "angle_bracketed" in args:
            ab = args["angle_bracketed"]
            parts = []
            for arg in ab["args"]:
                if arg == "infer":
                    parts.append("_")
                elif "lifetime" in arg:
                    parts.append(arg["lifetime"])
                elif "type" in arg:
                    parts.append(self.ty(arg["type"]))
                elif "const" in arg:
                    parts.append(str(arg["const"].get("expr", arg["const"])))
            for constraint in ab["constraints"]:
                binding = constraint["binding"]
                if "equality" in binding:
                    parts.append(f"{constraint['name']} = {self.term(binding['equality'])}")
                else:
                    parts.append(f"{constraint['name']}: {self.bounds(binding['constraint'])}")
            return f"<{', '.join(parts)}>" if parts else ""
        if "parenthesized" in args:
            p = args["parenthesized"]
            inputs = ", ".join(self.ty(t) for t in p["inputs"])
            output = f" -> {self.ty(p['output'])}" if p["output"] is not None else ""
            return f"({inputs}){output}"
        return ""

    def ty(self, ty):
        if ty is None:
            return "()"
        if isinstance(ty, str):
            return "_" if ty == "infer" else ty
        kind, value = next(iter(ty.items()))
        if kind == "resolved_path":
            return self.path(value)
        if kind == "generic":
            return value
        if kind == "primitive":
            return value
        if kind == "tuple":
            return f"({', '.join(self.ty(t) for t in value)}{',' if len(value) == 1 else ''})"
        if kind == "slice":
            return f"[{self.ty(value)}]"
        if kind == "array":
            return f"[{self.ty(value['type'])}; {value['len']}]"
        if kind == "borrowed_ref":
            lifetime = f"{value['lifetime']} " if value["lifetime"] else ""
            mutable = "mut " if value["is_mutable"] else ""
            return f"&{lifetime}{mutable}{self.ty(value['type'])}"
        if kind == "raw_pointer":
            return f"*{'mut' if value['is_mutable'] else 'const'} {self.ty(value['type'])}"
        if kind == "dyn_trait":
            traits = []
            for poly in value["traits"]:
                traits.append(self.path(poly["trait"]))
            if value.get("lifetime"):
                traits.append(value["lifetime"])
            return f"dyn {' + '.join(traits)}"
        if kind == "impl_trait":
            return f"impl {self.bounds(value)}"
        if kind == "function_pointer":
            sig = value["sig"]
            args = ", ".join(self.ty(t) for _, t in sig["inputs"])
            ret = f" -> {self.ty(sig['output'])}" if sig["output"] is not None else ""
            return f"fn({args}){ret}"
        if kind == "qualified_path":
            self_type = self.ty(value["self_type"])
            trait = value.get("trait")
            args = self.generic_args(value.get("args"))
            if trait is None:
                return f"{self_type}::{value['name']}{args}"
            return f"<{self_type} as {self.path(trait)}>::{value['name']}{args}"
        if kind == "pat":
            return self.ty(value["type"])
        return json.dumps(ty, sort_keys=True)


if __name__ == "__main__":
    main()
