// The instances panel: each instance's rotation as the balancer sees it,
// and buttons that call that instance's real PUT /actuator/health, through
// its ACL, with the token the shop printed at start.
(function () {
  "use strict";
  const self = document.body.dataset.instance;
  const token = document.getElementById("token");
  const rows = document.getElementById("instance-rows");
  const result = document.getElementById("toggle-result");
  const phase = document.getElementById("phase");
  let behindBalancer = true;

  token.value = sessionStorage.getItem("shop-health-token") || "";
  token.addEventListener("input", () => sessionStorage.setItem("shop-health-token", token.value.trim()));
  document.getElementById("reload").addEventListener("click", () => location.reload());

  // Every instance, from the balancer; without one, this instance alone.
  async function instances() {
    if (behindBalancer) {
      const answer = await fetch("/balancer/instances", { cache: "no-store" });
      if (answer.ok) return answer.json();
      behindBalancer = false;
    }
    const answer = await fetch("/actuator/health", { cache: "no-store" });
    const body = await answer.json();
    return [{ name: self, ready: body.status === "UP" }];
  }

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  async function refresh() {
    let list;
    try {
      list = await instances();
    } catch (e) {
      return;
    }
    rows.replaceChildren(...list.map((instance) => {
      const tr = document.createElement("tr");
      tr.dataset.name = instance.name;
      tr.dataset.ready = instance.ready;
      if (instance.name === self) {
        tr.className = "this";
        phase.textContent = instance.ready ? "in rotation" : "out of rotation";
        phase.className = instance.ready ? "badge" : "badge down";
      }
      tr.append(cell(instance.name));
      const state = document.createElement("td");
      const badge = document.createElement("span");
      badge.className = instance.ready ? "badge" : "badge down";
      badge.textContent = instance.ready ? "in rotation" : "out of rotation";
      state.append(badge);
      tr.append(state);
      const action = document.createElement("td");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.name = instance.name;
      button.dataset.action = instance.ready ? "out" : "in";
      button.className = instance.ready ? "warn" : "";
      button.textContent = instance.ready ? "Take out of rotation" : "Put back";
      button.addEventListener("click", () => toggle(instance.name, instance.ready ? "OUT_OF_SERVICE" : "UP"));
      action.append(button);
      tr.append(action);
      return tr;
    }));
  }

  async function toggle(name, status) {
    const url = behindBalancer ? "/instances/" + encodeURIComponent(name) + "/actuator/health" : "/actuator/health";
    const headers = { "Content-Type": "application/json" };
    if (token.value.trim()) headers.Authorization = "Bearer " + token.value.trim();
    const answer = await fetch(url, { method: "PUT", headers, body: JSON.stringify({ status }) });
    if (answer.ok) {
      const body = await answer.json();
      result.textContent = name + ": " + body.previous + " \u2192 " + body.traffic;
    } else if (answer.status === 403) {
      result.textContent = name + ": refused (403): paste the health token the shop printed at start";
    } else {
      result.textContent = name + ": " + answer.status + " " + (await answer.text());
    }
    setTimeout(refresh, 700);
  }

  refresh();
  setInterval(refresh, 1000);
})();
