// Drives the test app through a SMART standalone launch in headless Chromium, as a user would:
// open the app, sign in on the server's login form, allow on its consent form, then print
// what the app read (window.RESULT) as JSON.
//   node drive.mjs APP_LAUNCH_URL USERNAME PASSWORD
import { chromium } from "playwright-core";

const [launchUrl, username, password] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--headless=new"],
});
try {
  const page = await browser.newPage();
  await page.goto(launchUrl);
  await page.waitForSelector("input[name=username]", { timeout: 30000 });
  await page.fill("input[name=username]", username);
  await page.fill("input[name=password]", password);
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  await page.waitForSelector("button[value=allow]", { timeout: 30000 });
  await Promise.all([page.waitForNavigation(), page.click("button[value=allow]")]);
  await page.waitForFunction(() => window.RESULT !== undefined, null, { timeout: 30000 });
  console.log(JSON.stringify(await page.evaluate(() => window.RESULT)));
} finally {
  await browser.close();
}
