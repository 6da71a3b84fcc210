// The anywidget front end of ipybgfetch's progress panel.
//
// A view only: it renders the `state` (one registration) or `registrations` (the manager)
// traits pushed by the kernel and sends intents back with model.send():
// {type: "abort" | "pause" | "resume" | "click", id, key, seq}. The render logic lives in
// the modules render.js re-exports (unit-tested with jsdom under js/test/).
import { mount } from "./render.js";

export default {
  /** @param {{model: import("./mount.js").Model, el: HTMLElement}} props */
  render({ model, el }) {
    return mount(model, el);
  },
};
