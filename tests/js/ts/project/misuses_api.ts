// This file MUST NOT type-check: the test asserts that tsc reports exactly these errors
// (and not, say, that the package cannot be found).
import { Client } from "tether-client";

const client = new Client("/connection/websocket");
client.publish("chat:lobby"); // TS2554: the data argument is missing
const offset: string = client.getSubscription("chat:lobby")!.offset; // TS2322: number | undefined
client.subscribe("chat:lobby", { onPublication: 1 }); // TS2322: not a function
