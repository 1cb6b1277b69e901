// A relative URL, so the page keeps working if it is ever served under a
// path prefix.
fetch("api/GetFeed")
  .then((response) => response.json())
  .then((feed) => {
    const list = document.getElementById("feed");
    list.replaceChildren(
      ...(feed.items.length ? feed.items : [{ text: "nothing posted yet" }]).map((item) => {
        const li = document.createElement("li");
        li.textContent = item.text;
        return li;
      }),
    );
  });
