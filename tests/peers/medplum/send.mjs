// Sends each file named on the command line to host:port with @medplum/hl7's Hl7Client over one
// connection, waiting for each ACK; prints one JSON line per ACK: MSA-1, MSA-2, MSH-10 sent.
import { readFileSync } from 'node:fs';
import { Hl7Message } from '@medplum/core';
import { Hl7Client } from '@medplum/hl7';

const [host, port, ...files] = process.argv.slice(2);
const client = new Hl7Client({ host, port: Number(port), encoding: 'utf-8' });
try {
  for (const file of files) {
    const msg = Hl7Message.parse(readFileSync(file, 'utf-8'));
    const ack = await client.sendAndWait(msg, { timeoutMs: 5000 });
    const msa = ack.getSegment('MSA');
    console.log(JSON.stringify({
      sent: msg.getSegment('MSH').getField(10).toString(),
      msa1: msa.getField(1).toString(),
      msa2: msa.getField(2).toString(),
    }));
  }
} finally {
  await client.close();
}
