-- A caller done with an op's secret result (export_users' password
-- hashes) before the result arrived: the result is stored without its
-- payload when it comes (agentendpoint.SQLStore.ForgetPayload).
ALTER TABLE agent_ops ADD COLUMN forget_payload INTEGER NOT NULL DEFAULT 0;
