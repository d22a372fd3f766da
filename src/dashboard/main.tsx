/** Entry point of the dashboard page. */
import { render } from "preact";
import { takeTokenFromAddress } from "./api.js";
import { App } from "./app.js";
import "./style.css";

takeTokenFromAddress();
render(<App />, document.getElementById("app")!);
