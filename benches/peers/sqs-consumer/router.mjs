// The forwarding mix of benches/router.rs on sqs-consumer, the Node.js library most teams would
// pick (the peer of issue 15): CONSUMERS consumers of SOURCE_URL, each receiving batches of 10;
// "forward" messages go to OUT_URL and "dead" ones to DLQ_URL in one SendMessageBatch each,
// "drop" ones are only deleted; the consumer deletes the whole batch after the sends.
//
// Started by benches/router.rs (`npm ci` in this directory first; benches/run.sh does it). It
// runs until SIGTERM, then prints its request counts per operation as one JSON line.
import { Consumer } from "sqs-consumer";
import { SQSClient, SendMessageBatchCommand } from "@aws-sdk/client-sqs";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const source = env("SOURCE_URL");
const out = env("OUT_URL");
const dlq = env("DLQ_URL");
const consumers = Number(process.env.CONSUMERS ?? "8");

const sqs = new SQSClient({
  endpoint: env("ENDPOINT"),
  region: "us-east-1",
  credentials: { accessKeyId: "test", secretAccessKey: "test" },
});
const requests = {};
sqs.middlewareStack.add(
  (next, context) => async (args) => {
    requests[context.commandName] = (requests[context.commandName] ?? 0) + 1;
    return next(args);
  },
  { step: "finalizeRequest", name: "countRequests" },
);

async function sendBatch(url, messages) {
  if (messages.length === 0) return;
  const sent = await sqs.send(
    new SendMessageBatchCommand({
      QueueUrl: url,
      Entries: messages.map((m, i) => ({ Id: String(i), MessageBody: m.Body })),
    }),
  );
  if (sent.Failed?.length) throw new Error(`a send failed: ${JSON.stringify(sent.Failed)}`);
}

const running = [];
for (let i = 0; i < consumers; i++) {
  const consumer = Consumer.create({
    queueUrl: source,
    sqs,
    batchSize: 10,
    waitTimeSeconds: 20,
    handleMessageBatch: async (messages) => {
      const forward = [];
      const dead = [];
      for (const m of messages) {
        let kind;
        try {
          kind = JSON.parse(m.Body).kind;
        } catch {
          kind = undefined;
        }
        if (kind === "forward") forward.push(m);
        else if (kind === "dead") dead.push(m);
      }
      await Promise.all([sendBatch(out, forward), sendBatch(dlq, dead)]);
      return messages;
    },
  });
  consumer.on("error", (e) => console.error(`error: ${e.message}`));
  consumer.on("processing_error", (e) => console.error(`processing_error: ${e.message}`));
  consumer.start();
  running.push(consumer);
}

process.on("SIGTERM", () => {
  for (const consumer of running) consumer.stop();
  console.log(JSON.stringify(requests));
  process.exit(0);
});
