// The console's shell: the token form, the role, and the page router
// (#/overview, #/events, ...). Each page is a function of its element that
// returns what stops it (timers, live tails) when another page opens.

import { session, setToken, loadConfig, whoami } from "./api.js";
import { pages, notice } from "./pages.js";

let stopPage = null;

function route() {
  const name = (location.hash.replace(/^#\/?/, "").split("?")[0] || "overview").toLowerCase();
  const page = pages[name] ? name : "overview";
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.page === page);
  }
  if (stopPage) stopPage();
  stopPage = null;
  const el = document.getElementById("page");
  el.replaceChildren();
  el.dataset.page = page;
  stopPage = pages[page](el) || null;
}

async function identify() {
  const who = document.getElementById("whoami");
  if (!session.token && session.authRequired) {
    session.role = null;
    who.textContent = "not signed in";
    notice("enter a token to see the server", "info");
    return;
  }
  try {
    await whoami();
    who.textContent = session.authRequired ? `role: ${session.role}` : "open server (no tokens configured)";
    notice("");
  } catch (e) {
    session.role = null;
    who.textContent = "not signed in";
    notice(session.token ? `token refused: ${e.message}` : "enter a token to see the server");
  }
}

async function start() {
  try {
    await loadConfig();
  } catch (e) {
    notice(`the server does not answer: ${e.message}`);
  }
  const form = document.getElementById("login");
  const input = document.getElementById("token");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    input.value = "";
    await identify();
    route();
  });
  document.getElementById("forget-token").addEventListener("click", async () => {
    setToken("");
    await identify();
    route();
  });
  window.addEventListener("hashchange", route);
  await identify();
  route();
  document.body.dataset.ready = "true";
}

start();
