// wati-ingest console: times in the viewer's time zone (UTC stays in the title, on hover).
// No framework; the page works without this script, in UTC.
"use strict";
document.querySelectorAll("time[datetime]").forEach((element) => {
  const at = new Date(element.getAttribute("datetime"));
  if (!Number.isNaN(at.getTime())) {
    element.textContent = at.toLocaleString(undefined, {
      dateStyle: "medium",
      timeStyle: "short",
    });
  }
});
