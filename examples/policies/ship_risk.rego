# Disposes of the ship-risk operator's actions (examples/specs/operators.yaml).
#
# Fail closed: an action is blocked unless a rule below names its capability.
# Holding an order is reversible, so it runs; a notification runs but flags a
# person (ALERT), at most notify_cap times per order per hour, so a flood of
# events about one order can never become a flood of messages. Anything else
# the operator might propose is refused.
#
# Approval is bound to what was shown: a hold is refused when the picture the
# approver saw is stale (the plan is older than max_plan_age_seconds, or a
# newer event about the order arrived after the plan was proposed), and any
# action is refused while its tool's definition differs from its pin. The
# executor supplies these context fields; a plan preview has no plan to age.
package fibric.ship_risk

import rego.v1

# Notifications about one entity allowed per hour; the next one is blocked.
notify_cap := 3

# A hold approved on a plan older than this (15 minutes, one schedule tick) is refused.
max_plan_age_seconds := 900

default decision := {"decision": "BLOCK", "rule": "default-deny"}

decision := {"decision": "ALLOW", "rule": "orders.hold"} if {
	input.action.capability == "orders.hold"
	count(hold_stale) == 0
	not tool_changed
}

decision := {"decision": "BLOCK", "rule": "orders.hold.stale", "reasons": [r | some r in hold_stale]} if {
	input.action.capability == "orders.hold"
	count(hold_stale) > 0
	not tool_changed
}

decision := {"decision": "ALERT", "rule": "orders.notify"} if {
	input.action.capability == "orders.notify"
	notifications_last_hour < notify_cap
	not tool_changed
}

decision := {"decision": "BLOCK", "rule": "tool-changed", "reasons": [reason]} if {
	tool_changed
	reason := sprintf("the tool behind %s changed since it was pinned; acknowledge it first", [input.action.capability])
}

decision := {"decision": "BLOCK", "rule": "orders.notify.cap", "reasons": [reason]} if {
	input.action.capability == "orders.notify"
	notifications_last_hour >= notify_cap
	not tool_changed
	reason := sprintf(
		"%d notifications about %s in the last hour (cap %d)",
		[notifications_last_hour, input.action.entity_key, notify_cap],
	)
}

# Notifications already applied for this entity in the last hour. Undefined
# when the caller supplied no counts, which leaves a notification at
# default-deny: without the count the cap cannot be checked.
notifications_last_hour := n if {
	n := input.context.counts.entity_capability.last_hour
	is_number(n)
}

# Why a hold would act on a stale picture of the order (empty when it would not).
hold_stale contains reason if {
	input.context.plan_age_seconds > max_plan_age_seconds
	reason := sprintf("the plan is %d s old (limit %d s)", [input.context.plan_age_seconds, max_plan_age_seconds])
}

hold_stale contains reason if {
	input.context.entity_changed_since_plan == true
	reason := sprintf("a newer event about %s arrived after the plan was proposed", [input.action.entity_key])
}

tool_changed if input.context.tool_changed == true
