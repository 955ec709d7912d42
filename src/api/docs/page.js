"use strict";
(function () {
  const root = new URL(".", window.location.href);
  const app = document.getElementById("app");
  let spec = null;
  let token = "";

  // Builds an element; children are nodes or text (never parsed as HTML).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  // `code` spans in a line of text.
  function inline(text) {
    return String(text).split("`").map((part, i) => (i % 2 ? el("code", {}, part) : part));
  }

  // Paragraphs and "- " lists: the little Markdown the document uses.
  function prose(text) {
    const out = el("div");
    if (!text) return out;
    for (const block of String(text).split(/\n\s*\n/)) {
      const lines = block.split("\n");
      if (lines.every((line) => /^\s*- /.test(line) || /^\s{2,}\S/.test(line))) {
        const list = el("ul");
        let item = null;
        for (const line of lines) {
          if (/^\s*- /.test(line)) {
            item = el("li", {}, inline(line.replace(/^\s*- /, "")));
            list.append(item);
          } else if (item) {
            item.append(" ", ...inline(line.trim()));
          }
        }
        out.append(list);
      } else {
        out.append(el("p", {}, inline(lines.join(" "))));
      }
    }
    return out;
  }

  function resolve(schema) {
    const ref = schema && schema.$ref;
    if (!ref) return [schema, null];
    const name = ref.replace("#/components/schemas/", "");
    return [(spec.components.schemas || {})[name] || {}, name];
  }

  function typeText(schema) {
    const [target, name] = resolve(schema);
    if (name) return name;
    if (target.anyOf) return target.anyOf.map(typeText).join(" | ");
    let type = Array.isArray(target.type) ? target.type.join(" | ") : target.type || "any";
    if (type === "array" && target.items) type = "array of " + typeText(target.items);
    if (target.format) type += " (" + target.format + ")";
    return type;
  }

  function constraints(schema) {
    const [target] = resolve(schema);
    const parts = [];
    if (target.minLength !== undefined) parts.push("min length " + target.minLength);
    if (target.maxLength !== undefined) parts.push("max length " + target.maxLength);
    if (target.minimum !== undefined) parts.push("min " + target.minimum);
    if (target.maximum !== undefined) parts.push("max " + target.maximum);
    if (target.default !== undefined) parts.push("default " + JSON.stringify(target.default));
    if (target.pattern) parts.push("pattern " + target.pattern);
    return parts.join(", ");
  }

  // A schema as a table of its properties (objects) or a type line.
  function schemaView(schema, seen) {
    seen = seen || [];
    const [target, name] = resolve(schema);
    if (name && seen.includes(name)) return el("span", { class: "type" }, name);
    const inner = name ? seen.concat([name]) : seen;
    if (target.type === "array" && target.items) {
      return el("div", {}, el("span", { class: "type" }, "array of"), el("div", { class: "nested" }, schemaView(target.items, inner)));
    }
    if (target.anyOf) {
      return el("div", {}, el("span", { class: "type" }, "one of"),
        el("div", { class: "nested" }, target.anyOf.map((option) => schemaView(option, inner))));
    }
    const props = target.properties;
    if (target.type === "object" && props && Object.keys(props).length) {
      const required = target.required || [];
      const rows = Object.entries(props).map(([key, prop]) => {
        const [propTarget] = resolve(prop);
        const nested = prop.$ref ? prop
          : propTarget.type === "array" && propTarget.items && propTarget.items.$ref ? propTarget.items : null;
        return el("tr", {},
          el("td", { class: "name" }, key, required.includes(key) ? el("span", { class: "req", title: "required" }, "*") : null),
          el("td", {}, el("span", { class: "type" }, typeText(prop)),
            constraints(prop) ? el("div", { class: "muted" }, constraints(prop)) : null,
            nested ? el("div", { class: "nested" }, schemaView(nested, inner)) : null),
          el("td", {}, prose(propTarget.description || "")));
      });
      const extra = target.additionalProperties === false ? null
        : el("div", { class: "muted" }, "Other properties are ignored.");
      return el("div", {},
        target.description ? prose(target.description) : null,
        el("table", {}, el("tr", {}, el("th", {}, "name"), el("th", {}, "type"), el("th", {}, "")), rows),
        extra);
    }
    return el("div", {}, el("span", { class: "type" }, typeText(schema)),
      constraints(schema) ? el("span", { class: "muted" }, " " + constraints(schema)) : null,
      target.description ? prose(target.description) : null);
  }

  // A request body to start from: the required fields with plausible values.
  function sample(schema, seen) {
    const [target, name] = resolve(schema);
    seen = seen || [];
    if (name && seen.includes(name)) return null;
    const inner = name ? seen.concat([name]) : seen;
    if (target.type === "object") {
      const out = {};
      for (const key of target.required || []) out[key] = sampleValue(key, target.properties[key], inner);
      return out;
    }
    return sampleValue("", target, inner);
  }

  function sampleValue(key, schema, seen) {
    const [target] = resolve(schema);
    const type = Array.isArray(target.type) ? target.type[0] : target.type;
    if (type === "object") return sample(schema, seen);
    if (type === "boolean") return false;
    if (type === "integer" || type === "number") return target.minimum || 0;
    if (type === "array") return [];
    if (target.format === "email") return "ada@example.com";
    if (target.format === "uri") return "https://app.example/";
    if (/password/.test(key)) return "correct horse battery staple";
    if (key === "username") return "ada";
    return "x".repeat(target.minLength || 0);
  }

  function tryIt(path, method, op) {
    const params = op.parameters || [];
    const inputs = {};
    const form = el("div", { class: "try" }, el("h3", {}, "Try it"));
    for (const param of params) {
      const input = el("input", { placeholder: typeText(param.schema) });
      inputs[param.name] = [param, input];
      form.append(el("label", {}, param.name + " (" + param.in + (param.required ? ", required" : "") + ")"), input);
    }
    let bodyInput = null;
    const media = op.requestBody && op.requestBody.content["application/json"];
    if (media) {
      bodyInput = el("textarea", { spellcheck: "false" });
      bodyInput.value = JSON.stringify(sample(media.schema), null, 2);
      form.append(el("label", {}, "JSON body"), bodyInput);
    }
    const result = el("div");
    const send = async () => {
      result.replaceChildren(el("span", { class: "muted" }, "…"));
      let target = path;
      const query = new URLSearchParams();
      for (const [param, input] of Object.values(inputs)) {
        if (param.in === "path") target = target.replace("{" + param.name + "}", encodeURIComponent(input.value));
        else if (input.value !== "") query.set(param.name, input.value);
      }
      const url = new URL(target.replace(/^\//, ""), root);
      url.search = query.toString();
      const headers = {};
      if (token) headers.Authorization = "Bearer " + token;
      const init = { method: method.toUpperCase(), headers, credentials: "same-origin", redirect: "manual" };
      if (bodyInput) {
        headers["Content-Type"] = "application/json";
        init.body = bodyInput.value;
      }
      try {
        const response = await fetch(url, init);
        const text = await response.text();
        let shown = text;
        try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON */ }
        result.replaceChildren(
          el("div", {}, el("span", { class: "status" }, String(response.status)), " ", response.statusText),
          el("pre", {}, shown.length > 20000 ? shown.slice(0, 20000) + "\n…" : shown));
      } catch (err) {
        result.replaceChildren(el("div", { class: "error" }, String(err)));
      }
    };
    form.append(el("div", { style: "margin-top:8px" }, el("button", { onclick: send }, "Send")), result);
    return form;
  }

  function operationView(path, method, op) {
    const secured = (op.security || []).length > 0;
    const body = el("div", { class: "body" });
    const summary = el("summary", {},
      el("span", { class: "method m-" + method }, method),
      el("span", { class: "path" }, path),
      el("span", { class: "muted" }, op.summary || ""),
      secured ? el("span", { class: "lock", title: "token required" }, "token") : null);
    const details = el("details", { class: "op", id: op.operationId }, summary, body);
    let built = false;
    details.addEventListener("toggle", () => {
      if (!details.open || built) return;
      built = true;
      body.append(prose(op.description));
      if (secured) {
        const names = op.security.flatMap((s) => Object.keys(s));
        body.append(el("p", { class: "muted" }, "Token required: " + names.join(" or ") + "."));
      }
      if ((op.parameters || []).length) {
        body.append(el("h3", {}, "Parameters"), el("table", {},
          el("tr", {}, el("th", {}, "name"), el("th", {}, "in"), el("th", {}, "type")),
          op.parameters.map((p) => el("tr", {},
            el("td", { class: "name" }, p.name, p.required ? el("span", { class: "req" }, "*") : null),
            el("td", {}, p.in),
            el("td", {}, el("span", { class: "type" }, typeText(p.schema)),
              constraints(p.schema) ? el("div", { class: "muted" }, constraints(p.schema)) : null)))));
      }
      if (op.requestBody) {
        for (const [type, media] of Object.entries(op.requestBody.content)) {
          body.append(el("h3", {}, "Request body ", el("span", { class: "muted" }, type)), schemaView(media.schema));
        }
      }
      body.append(el("h3", {}, "Responses"));
      for (const [status, answer] of Object.entries(op.responses || {})) {
        const block = el("div", { class: "nested", style: "margin:8px 0" },
          el("div", {}, el("span", { class: "status" }, status), " ", inline(answer.description || "")));
        for (const [name, header] of Object.entries(answer.headers || {})) {
          block.append(el("div", { class: "muted" }, "Header ", el("code", {}, name), ": ", inline(header.description || "")));
        }
        for (const [type, media] of Object.entries(answer.content || {})) {
          block.append(el("div", { class: "muted" }, type));
          if (media.examples) {
            const texts = Object.values(media.examples).map((e) => JSON.stringify(e.value));
            block.append(el("pre", {}, texts.join("\n")));
          } else if (media.schema) {
            block.append(schemaView(media.schema));
          }
        }
        body.append(block);
      }
      body.append(tryIt(path, method, op));
    });
    return details;
  }

  function render() {
    const info = spec.info || {};
    const tokenInput = el("input", { type: "password", placeholder: "access token for \"Try it\" (or rely on the access_token cookie)", autocomplete: "off" });
    tokenInput.addEventListener("input", () => { token = tokenInput.value.trim(); });
    const byTag = new Map((spec.tags || []).map((t) => [t.name, { tag: t, ops: [] }]));
    for (const [path, item] of Object.entries(spec.paths || {})) {
      for (const [method, op] of Object.entries(item)) {
        const tag = (op.tags || ["other"])[0];
        if (!byTag.has(tag)) byTag.set(tag, { tag: { name: tag }, ops: [] });
        byTag.get(tag).ops.push(operationView(path, method, op));
      }
    }
    const jsonLink = el("a", { href: new URL("docs/json", root).href }, "/docs/json");
    app.replaceChildren(
      el("h1", {}, info.title || "API", el("span", { class: "version" }, info.version || "")),
      el("div", { class: "muted" }, "OpenAPI " + spec.openapi + " · ", jsonLink),
      prose(info.description),
      el("div", { class: "bar" }, el("label", {}, "Bearer token"), tokenInput),
      ...[...byTag.values()].filter((g) => g.ops.length).map((g) =>
        el("section", {}, el("h2", {}, g.tag.name), g.tag.description ? el("div", { class: "muted" }, g.tag.description) : null, g.ops)));
    if (window.location.hash) {
      const target = document.getElementById(window.location.hash.slice(1));
      if (target && target.tagName === "DETAILS") {
        target.open = true;
        target.scrollIntoView();
      }
    }
  }

  fetch(new URL("docs/json", root), { headers: { Accept: "application/json" } })
    .then((response) => {
      if (!response.ok) throw new Error("GET /docs/json answered " + response.status);
      return response.json();
    })
    .then((body) => { spec = body; render(); })
    .catch((err) => { app.replaceChildren(el("p", { class: "error" }, String(err))); });
})();
