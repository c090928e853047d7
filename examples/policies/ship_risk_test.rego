# Unit tests of ship_risk.rego, run by `fibric validate`.
package fibric.ship_risk_test

import rego.v1

import data.fibric.ship_risk

action(capability) := {
	"capability": capability,
	"entity_key": "order:SO-10884",
	"idempotency_key": "ship-risk:SO-10884:test",
	"args": {},
}

test_hold_is_allowed if {
	ship_risk.decision == {"decision": "ALLOW", "rule": "orders.hold"} with input as {"action": action("orders.hold")}
}

test_notify_raises_an_alert if {
	ship_risk.decision == {"decision": "ALERT", "rule": "orders.notify"} with input as {"action": action("orders.notify")}
}

test_other_capabilities_are_blocked if {
	ship_risk.decision == {"decision": "BLOCK", "rule": "default-deny"} with input as {"action": action("orders.cancel")}
}

test_reads_are_not_actions if {
	ship_risk.decision == {"decision": "BLOCK", "rule": "default-deny"} with input as {"action": action("orders.read")}
}

test_missing_action_is_blocked if {
	ship_risk.decision == {"decision": "BLOCK", "rule": "default-deny"} with input as {}
}
