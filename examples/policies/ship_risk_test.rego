# Unit tests of ship_risk.rego, run by `fibric validate` and `fibric policy test`.
package fibric.ship_risk_test

import rego.v1

import data.fibric.ship_risk

action(capability) := {
	"capability": capability,
	"entity_key": "order:SO-10884",
	"idempotency_key": "ship-risk:SO-10884:test",
	"args": {},
}

# The input for `capability` when `sent` notifications about the order were
# applied in the last hour.
with_counts(capability, sent) := {
	"action": action(capability),
	"context": {"counts": {"entity_capability": {"last_hour": sent, "last_day": sent}}},
}

test_hold_is_allowed if {
	ship_risk.decision == {"decision": "ALLOW", "rule": "orders.hold"} with input as {"action": action("orders.hold")}
}

test_notify_raises_an_alert if {
	ship_risk.decision == {"decision": "ALERT", "rule": "orders.notify"} with input as with_counts("orders.notify", 0)
}

test_notify_below_the_cap_still_alerts if {
	ship_risk.decision == {"decision": "ALERT", "rule": "orders.notify"} with input as with_counts("orders.notify", 2)
}

test_notify_at_the_cap_is_blocked if {
	d := ship_risk.decision with input as with_counts("orders.notify", 3)
	d.decision == "BLOCK"
	d.rule == "orders.notify.cap"
	d.reasons == ["3 notifications about order:SO-10884 in the last hour (cap 3)"]
}

test_a_flood_of_notifications_is_blocked if {
	d := ship_risk.decision with input as with_counts("orders.notify", 657)
	d.rule == "orders.notify.cap"
}

test_holds_are_not_capped if {
	ship_risk.decision.decision == "ALLOW" with input as with_counts("orders.hold", 657)
}

test_notify_without_counts_is_blocked if {
	ship_risk.decision == {"decision": "BLOCK", "rule": "default-deny"} with input as {"action": action("orders.notify")}
}

test_notify_with_a_non_numeric_count_is_blocked if {
	ship_risk.decision == {"decision": "BLOCK", "rule": "default-deny"} with input as with_counts("orders.notify", "2")
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

test_a_fresh_hold_is_allowed if {
	ship_risk.decision == {"decision": "ALLOW", "rule": "orders.hold"} with input as {
		"action": action("orders.hold"),
		"context": {"plan_age_seconds": 60, "entity_changed_since_plan": false, "tool_changed": false},
	}
}

test_a_hold_on_an_old_plan_is_blocked if {
	d := ship_risk.decision with input as {
		"action": action("orders.hold"),
		"context": {"plan_age_seconds": 901, "entity_changed_since_plan": false, "tool_changed": false},
	}
	d.rule == "orders.hold.stale"
	d.reasons == ["the plan is 901 s old (limit 900 s)"]
}

test_a_hold_after_a_newer_event_is_blocked if {
	d := ship_risk.decision with input as {
		"action": action("orders.hold"),
		"context": {"plan_age_seconds": 5, "entity_changed_since_plan": true, "tool_changed": false},
	}
	d.rule == "orders.hold.stale"
	d.reasons == ["a newer event about order:SO-10884 arrived after the plan was proposed"]
}

test_a_hold_that_is_old_and_overtaken_names_both_reasons if {
	d := ship_risk.decision with input as {
		"action": action("orders.hold"),
		"context": {"plan_age_seconds": 7200, "entity_changed_since_plan": true},
	}
	d.decision == "BLOCK"
	count(d.reasons) == 2
}

test_a_changed_tool_blocks_every_action if {
	d := ship_risk.decision with input as {
		"action": action("orders.notify"),
		"context": {"tool_changed": true, "counts": {"entity_capability": {"last_hour": 0}}},
	}
	d.decision == "BLOCK"
	d.rule == "tool-changed"
}
