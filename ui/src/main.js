// The Switchyard control UI: a single-page application the gateway serves
// at `/`, talking to it over its own WebSocket with the JavaScript client.

import { App } from './app.js';

const root = document.getElementById('app');
if (root) void new App(root).start();
