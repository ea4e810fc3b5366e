// Citation links: clicking [n] in a reply scrolls to source n in the sources panel and highlights
// it. Works on the full page and inside an embedding page (<gradio-app> web component), where the
// browser's own #fragment navigation would scroll the host page instead. Without JavaScript the
// links still work as plain anchors, highlighted by the :target rule of chat.css.
(() => {
  if (window.__qaCitations) return;
  window.__qaCitations = true;
  const find = (link, id) => {
    const root = link.getRootNode();
    return (root && root.getElementById && root.getElementById(id)) || document.getElementById(id);
  };
  document.addEventListener(
    "click",
    (event) => {
      const link = event.target && event.target.closest && event.target.closest('a[href^="#src-"]');
      if (!link) return;
      const card = find(link, link.getAttribute("href").slice(1));
      if (!card) return;
      event.preventDefault();
      event.stopPropagation();
      for (let d = card.closest("details"); d; d = d.parentElement && d.parentElement.closest("details")) {
        d.open = true;
      }
      document.querySelectorAll(".qa-src.qa-active").forEach((el) => el.classList.remove("qa-active"));
      // Restart the flash animation even when the same card is clicked twice.
      void card.offsetWidth;
      card.classList.add("qa-active");
      card.scrollIntoView({ behavior: "smooth", block: "nearest" });
      card.focus({ preventScroll: true });
    },
    true,
  );
})();
