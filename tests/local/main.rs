//! HTTP tests: the real local server on port 0, driven the way Wati and a reader would.

mod bad_input;
mod changes;
mod cli;
mod console;
mod forward;
mod health;
mod helpers;
mod logs;
mod read_api;
mod restart;
mod smoke;
mod startup;
mod state;
mod template_policy;
mod webhook;
