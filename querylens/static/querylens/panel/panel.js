// querylens toolbar panel: EXPLAIN buttons.
//
// Each button POSTs to the querylens admin's EXPLAIN endpoint (same view,
// same staff and CSRF checks as the admin pages) and shows the plan under
// the query. The toolbar loads this file as a module, once per page.

function debugElement() {
    const root = document.getElementById("djDebugRoot");
    if (!root) {
        return null;
    }
    return (root.shadowRoot || root).querySelector("#djDebug");
}

async function csrfToken(panel) {
    // The panel's HTML comes from the toolbar's store, without a token;
    // the panel's own toolbar URL hands one out (and sets the cookie).
    const url = panel.dataset.csrfUrl;
    if (url) {
        const response = await fetch(url, { credentials: "same-origin" });
        if (response.ok) {
            return (await response.json()).token;
        }
    }
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
}

function problem(response) {
    if (response.redirected || response.status === 401) {
        return "Log in as a staff user (in the admin) to run EXPLAIN.";
    }
    if (response.status === 403) {
        return "EXPLAIN was refused (403): it needs a staff login and a valid CSRF token.";
    }
    if (response.status === 404) {
        return "This request is no longer in querylens's buffer (404).";
    }
    return `EXPLAIN failed: ${response.status} ${response.statusText}`;
}

function showPlan(output, data) {
    output.replaceChildren();
    const heading = document.createElement("div");
    heading.className = "ql-muted";
    heading.textContent = `${data.vendor || "database"} · ${
        data.analyzed ? "EXPLAIN ANALYZE (rolled back)" : "EXPLAIN"
    }`;
    output.append(heading);
    for (const warning of data.warnings || []) {
        const line = document.createElement("div");
        line.className = "ql-bad";
        line.textContent = warning;
        output.append(line);
    }
    const plan = document.createElement("pre");
    plan.textContent = data.plan_text || "";
    output.append(plan);
}

async function explain(button) {
    const panel = button.closest(".ql-panel");
    const output = button.parentElement.querySelector(".ql-explain-output");
    output.hidden = false;
    output.textContent = "Running EXPLAIN…";
    button.disabled = true;
    try {
        const url = new URL(button.dataset.url, globalThis.location);
        url.searchParams.set("format", "json");
        const response = await fetch(url, {
            method: "POST",
            credentials: "same-origin",
            headers: {
                Accept: "application/json",
                "X-CSRFToken": await csrfToken(panel),
            },
        });
        const type = response.headers.get("content-type") || "";
        if (!response.ok || !type.includes("json")) {
            let message = problem(response);
            if (type.includes("json")) {
                const body = await response.json();
                message = body.error || body.detail || message;
            }
            output.textContent = message;
            return;
        }
        showPlan(output, await response.json());
    } catch (error) {
        output.textContent = `EXPLAIN failed: ${error.message}`;
    } finally {
        button.disabled = false;
    }
}

const djDebug = debugElement();
if (djDebug && !djDebug.dataset.querylensPanel) {
    // Module scripts run once per document, but guard anyway: two listeners
    // would run every EXPLAIN twice.
    djDebug.dataset.querylensPanel = "ready";
    djDebug.addEventListener("click", (event) => {
        const button = event.target.closest(".ql-explain-button");
        if (button && djDebug.contains(button)) {
            event.preventDefault();
            explain(button);
        }
    });
}
