import{a as b,b as _,d as $,e as j,f as w}from"./chunk-46G6MOPN.js";import{a as m,b as n,c as y,d as R,e as v,f as q,g as L,h,i as F,j as u,k as f,l as D,m as S}from"./chunk-MVQF4VFS.js";import"./chunk-SQE76S5B.js";var Y={booked:"booked",pending:"held",arrived:"arrived","checked-in":"arrived",fulfilled:"arrived",noshow:"noshow",waitlist:"waitlist",proposed:"held"},E={booked:"Booked",held:"Held",arrived:"Arrived",noshow:"No-show",waitlist:"Waitlist",blocked:"Blocked",flagged:"Flagged",offer:"Offer"};function Q(l){return w(l,b+"booking-flag").length?"flagged":l.status==="pending"&&w(l,b+"waitlist-offer").length?"offer":Y[l.status]||"booked"}async function z(l,t,e,i){if(!t.length)return[];let s=[],r=[];for(let o=0;o<t.length;o+=50)r.push(t.slice(o,o+50));let a=new Set(t);return await Promise.all(r.map(async o=>{let{resources:p,included:d}=await l.searchAll("Appointment",{actor:o.join(","),date:[`ge${f(e)}`,`lt${f(i)}`],status:"booked,pending,arrived,checked-in,fulfilled,noshow,proposed",_include:"Appointment:patient"});for(let c of p){if(!c.start)continue;let g=(c.participant||[]).map(k=>k.actor&&k.actor.reference).find(k=>k&&k.startsWith("Patient/")),J=g?$(d[g])||g:"";for(let k of c.participant||[]){let A=k.actor&&k.actor.reference;!A||!a.has(A)||s.push({key:`${c.id}|${A}`,id:c.id,appointment:c,resource:A,start:new Date(c.start),end:new Date(c.end||c.start),kind:Q(c),label:J||c.description||"Appointment",patient:g})}}let{resources:x}=await l.searchAll("Schedule",{actor:o.join(",")});if(!x.length)return;let O={};for(let c of x)O[j(c)]=(c.actor||[]).map(g=>g.reference).filter(g=>a.has(g));let{resources:H}=await l.searchAll("Slot",{schedule:Object.keys(O).join(","),status:"busy-unavailable",start:`lt${f(i)}`,end:`gt${f(e)}`});for(let c of H)for(let g of O[c.schedule.reference]||[])s.push({key:`${c.id}|${g}`,id:c.id,slot:c,resource:g,start:new Date(c.start),end:new Date(c.end),kind:"blocked",label:c.comment||"Blocked"})})),s.sort((o,p)=>o.start-p.start||o.key.localeCompare(p.key)),s}var G="https://fhir-sched.org/fhir/SubscriptionTopic/",Z="http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/",tt=["appointment-booked","appointment-changed","appointment-cancelled","slot-freed","waitlist-offer"];function et(l){return{resourceType:"Subscription",status:"requested",reason:"fhir-sched front-desk console: live calendar",criteria:G+l,channel:{type:"websocket",payload:"application/fhir+json",_payload:{extension:[{url:`${Z}backport-payload-content`,valueCode:"id-only"}]}}}}function U(l,t){let e=(l.parameter||[]).find(i=>i.name===t);return e&&(e.valueString??e.valueUrl??e.valueUri??e.valueDateTime)}var C=class{constructor(t,e,i){this.fhir=t,this.onChange=e,this.onState=i||(()=>{}),this.ids=[],this.socket=null,this.stopped=!1}async subscriptions(){let t=[];for(let e of tt)t.push((await this.fhir.post("Subscription",et(e))).id);return t}async start(){this.ids=await this.subscriptions(),window.addEventListener("pagehide",()=>this.stop(!0)),await this.connect()}async connect(){if(this.stopped)return;let t=await Promise.all(this.ids.map(i=>this.fhir.get(`Subscription/${i}/$get-ws-binding-token`))),e=new WebSocket(U(t[0],"websocket-url"));this.socket=e,e.onopen=()=>{for(let i of t)e.send(`bind-with-token ${U(i,"token")}`);this.onState("live")},e.onmessage=i=>{let s=null;try{s=JSON.parse(i.data)}catch{return}let r=s&&(s.entry||[])[0]&&s.entry[0].resource;(r&&(r.type||(r.parameter||[]).find(o=>o.name==="type")?.valueCode))==="event-notification"&&this.onChange()},e.onclose=()=>{this.socket!==e||this.stopped||(this.onState("reconnecting"),setTimeout(()=>this.connect().catch(()=>this.onState("polling")),5e3))}}stop(t=!1){if(this.stopped=!0,this.socket&&this.socket.close(),!t)return;let e={};this.fhir.smart&&(e.authorization=`Bearer ${this.fhir.smart.state.tokenResponse.access_token}`);for(let i of this.ids)fetch(this.fhir.url(`Subscription/${i}`),{method:"DELETE",keepalive:!0,headers:e})}};var T=m`
  .message { padding: 6px; border-radius: 4px; background: #fff4dc; color: #3d2b00; }
  .message.ok { background: #e7f5ea; color: #123d1c; }
`;function P(l){return n`<div aria-live="polite">${l?n`<p class="message ${l.ok?"ok":""}" role=${l.ok?"status":"alert"}>${l.text}</p>`:""}</div>`}var K=[["pat","Patient"],["prov","Provider"],["maint","Equipment maintenance"],["meds","Medication issue"],["other","Other"]],st="http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason",N=class extends y{static properties={fhir:{attribute:!1},entry:{attribute:!1},names:{attribute:!1},message:{state:!0},busy:{state:!0}};static styles=[T,m`
    :host { display: block; }
    dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 0.75rem; }
    dt { font-weight: 600; }
    .actions { display: flex; flex-wrap: wrap; gap: 0.4rem; margin: 0.5rem 0; }
    button, select, input { font: inherit; padding: 4px 8px; cursor: pointer; }
    fieldset { border: 1px solid #c8ccd0; border-radius: 4px; }
    .flag { color: #8b1c1c; }
  `];constructor(){super(),this.entry=null,this.names={},this.message=null,this.busy=!1}updated(t){let e=t.get("entry");t.has("entry")&&(e&&e.key)!==(this.entry&&this.entry.key)&&(this.message=null)}changed(){this.dispatchEvent(new CustomEvent("fs-changed",{bubbles:!0,composed:!0}))}async run(t,e){this.busy=!0;try{await e(),this.message={ok:!0,text:t},this.changed()}catch(i){this.message={ok:!1,text:i.message}}finally{this.busy=!1}}status(t,e){let i=this.entry.appointment;return this.run(e,async()=>{let s=[{op:"replace",path:"/status",value:t}];this.entry={...this.entry,appointment:await this.fhir.patch(`Appointment/${i.id}`,s)}})}cancel(t){t.preventDefault();let e=new FormData(t.target),i=e.get("reason"),s=e.get("note"),r=this.entry.appointment,a={coding:[{system:st,code:i,display:(K.find(o=>o[0]===i)||[])[1]}]};return s&&(a.text=s),this.run("Cancelled.",async()=>{this.entry={...this.entry,appointment:await this.fhir.patch(`Appointment/${r.id}`,[{op:"replace",path:"/status",value:"cancelled"},{op:"add",path:"/cancelationReason",value:a}])}})}unblock(){return this.run("Blocked time removed.",()=>this.fhir.request("DELETE",`Slot/${this.entry.slot.id}`))}reschedule(){this.dispatchEvent(new CustomEvent("fs-reschedule",{bubbles:!0,composed:!0,detail:this.entry.appointment}))}renderAppointment(t){let e=w(t,b+"booking-flag"),i=["booked","pending","arrived","checked-in"].includes(t.status);return n`
      <dl>
        <dt>When</dt><dd>${u(this.entry.start)}, ${h(this.entry.start)}–${h(this.entry.end)}</dd>
        <dt>Status</dt><dd>${t.status}</dd>
        <dt>Patient</dt><dd>${this.entry.label}</dd>
        <dt>With</dt><dd>${(t.participant||[]).map(s=>s.actor&&s.actor.reference).filter(s=>s&&!s.startsWith("Patient/")).map(s=>this.names[s]||s).join(", ")}</dd>
        ${e.length?n`<dt class="flag">Breaks</dt><dd class="flag">${e.map(s=>{let r=Object.fromEntries((s.extension||[]).map(a=>[a.url,a.valueCode||a.valueString]));return n`<div>${r.detail||r.rule}</div>`})}</dd>`:""}
      </dl>
      ${i?n`<div class="actions">
        <button ?disabled=${this.busy} @click=${()=>this.status("checked-in","Checked in.")}
          >Check in</button>
        <button ?disabled=${this.busy} @click=${()=>this.status("arrived","Arrived.")}
          >Arrived</button>
        <button ?disabled=${this.busy} @click=${()=>this.status("noshow","Marked no-show.")}
          >No-show</button>
        <button ?disabled=${this.busy} @click=${this.reschedule}>Reschedule</button>
      </div>
      <form @submit=${this.cancel}><fieldset><legend>Cancel this visit</legend>
        <label>Reason <select name="reason">${K.map(([s,r])=>n`<option value=${s}>${r}</option>`)}</select></label>
        <label>Note <input name="note" type="text"></label>
        <button type="submit" ?disabled=${this.busy}>Cancel visit</button>
      </fieldset></form>`:""}`}render(){let t=this.entry;return t?n`<h2>${E[t.kind]||t.kind}</h2>
      ${t.appointment?this.renderAppointment(t.appointment):n`
        <p>${u(t.start)}, ${h(t.start)}–${h(t.end)}: ${t.label}</p>
        <button ?disabled=${this.busy} @click=${this.unblock}>Remove blocked time</button>`}
      ${P(this.message)}`:n`<p>Choose an entry in the calendar.</p>`}};customElements.define("fs-details",N);var it={any:null,morning:{repeat:{when:["MORN"]}},afternoon:{repeat:{when:["AFT"]}}},W=class extends y{static properties={fhir:{attribute:!1},visitTypes:{attribute:!1},practitioners:{attribute:!1},names:{attribute:!1},reschedule:{attribute:!1},options:{state:!0},patients:{state:!0},patient:{state:!0},message:{state:!0},busy:{state:!0}};static styles=[T,m`
    form { display: grid; gap: 0.5rem; }
    label { display: grid; gap: 2px; font-weight: 600; }
    input, select, button { font: inherit; padding: 4px 6px; }
    .row { display: flex; gap: 0.5rem; flex-wrap: wrap; }
    ul { list-style: none; padding: 0; margin: 0.5rem 0; }
    li { display: flex; gap: 0.5rem; align-items: center; padding: 4px 0;
      border-bottom: 1px solid #ddd; flex-wrap: wrap; }
    li span { flex: 1 1 12rem; }
    button.primary { background: #1e3a8a; color: #fff; border: 1px solid #1e3a8a;
      border-radius: 4px; }
    button { cursor: pointer; }
  `];constructor(){super(),this.visitTypes=[],this.practitioners=[],this.names={},this.options=[],this.patients=[],this.patient=null,this.reschedule=null,this.message=null,this.busy=!1}updated(t){if(t.has("reschedule")&&this.reschedule){let e=(this.reschedule.participant||[]).map(i=>i.actor&&i.actor.reference).find(i=>i&&i.startsWith("Patient/"));this.patient=e?{ref:e,name:e}:null}}async searchPatients(t){let e=t.target.value.trim();if(e.length<2){this.patients=[];return}let i=await this.fhir.get("Patient",{name:e,_count:10});this.patients=(i.entry||[]).map(s=>({ref:`Patient/${s.resource.id}`,name:$(s.resource),birthDate:s.resource.birthDate}))}async find(t){t.preventDefault();let e=new FormData(t.target),i=S(e.get("from")),s=v(S(e.get("to")),1),r=[{name:"start",valueDateTime:f(i)},{name:"end",valueDateTime:f(s)},{name:"_count",valueInteger:10}],a=e.get("visit");a&&r.push({name:"visit-type",valueString:a}),this.patient&&r.push({name:"patient-reference",valueReference:{reference:this.patient.ref}});let o=e.get("practitioner");o&&r.push({name:"practitioner",valueReference:{reference:o}});let p=it[e.get("timing")];p&&r.push({name:"timing",valueTiming:p}),this.busy=!0,this.message=null;try{let d=await this.fhir.post("Appointment/$find",{resourceType:"Parameters",parameter:r});this.options=(d.entry||[]).map(x=>x.resource).filter(x=>x&&x.resourceType==="Appointment"),this.options.length||(this.message={text:"No free time in that window.",ok:!1})}catch(d){this.options=[],this.message={text:d.message,ok:!1}}finally{this.busy=!1}}async act(t,e){let i=[{name:"appt-resource",resource:t}];e==="book"&&this.reschedule&&i.push({name:"cancelled-appt-id",valueReference:{reference:`Appointment/${this.reschedule.id}`}}),this.busy=!0;try{let r=((await this.fhir.post(`Appointment/$${e}`,{resourceType:"Parameters",parameter:i})).entry||[]).map(o=>o.resource).find(o=>o&&o.resourceType==="Appointment"),a=(r&&r.extension||[]).find(o=>o.url===b+"hold-expires");this.message={ok:!0,text:e==="hold"?`Held${a?` until ${h(new Date(a.valueInstant))}`:""}: book it from the calendar before then.`:this.reschedule?"Rescheduled.":"Booked."},this.options=[],this.dispatchEvent(new CustomEvent("fs-changed",{bubbles:!0,composed:!0,detail:{appointment:r,operation:e}})),e==="book"&&this.reschedule&&(this.reschedule=null)}catch(s){this.message={text:`Not ${e==="hold"?"held":"booked"}: ${s.message}`,ok:!1}}finally{this.busy=!1}}actors(t){return(t.participant||[]).map(e=>e.actor&&e.actor.reference).filter(e=>e&&!e.startsWith("Patient/")).map(e=>this.names[e]||e).join(", ")}render(){let t=new Date;return n`<h2>${this.reschedule?"Reschedule":"Find free time"}</h2>
      ${this.reschedule?n`<p>Moving the visit of ${u(new Date(this.reschedule.start))}
        ${h(new Date(this.reschedule.start))}. <button type="button"
        @click=${()=>{this.reschedule=null}}>Stop rescheduling</button></p>`:""}
      <form @submit=${this.find}>
        <label>Visit type
          <select name="visit">
            <option value="">Any</option>
            ${this.visitTypes.map(e=>n`<option value=${e.token}>${e.label}</option>`)}
          </select></label>
        <label>Patient
          <input name="patient-search" type="search" autocomplete="off"
            placeholder="Family or given name" @input=${this.searchPatients}></label>
        ${this.patients.length?n`<ul aria-label="Patients found">${this.patients.map(e=>n`<li><span>${e.name} ${e.birthDate||""}</span><button type="button"
            @click=${()=>{this.patient=e,this.patients=[]}}>Choose ${e.name}</button>
            </li>`)}</ul>`:""}
        <p aria-live="polite">${this.patient?n`Patient: <strong>${this.patient.name}</strong>`:"No patient chosen"}</p>
        <label>Practitioner
          <select name="practitioner">
            <option value="">Any</option>
            ${this.practitioners.map(e=>n`<option value=${e.ref}>${e.name}</option>`)}
          </select></label>
        <div class="row">
          <label>From <input name="from" type="date" required value=${D(t)}></label>
          <label>To <input name="to" type="date" required value=${D(v(t,14))}>
          </label>
          <label>Time of day <select name="timing">
            <option value="any">Any</option><option value="morning">Morning</option>
            <option value="afternoon">Afternoon</option></select></label>
        </div>
        <button class="primary" type="submit" ?disabled=${this.busy}>Find</button>
      </form>
      ${P(this.message)}
      <ul aria-label="Free times">${this.options.map(e=>n`<li>
        <span>${u(new Date(e.start))}, ${h(new Date(e.start))}–${h(new Date(e.end))}
          · ${this.actors(e)}</span>
        ${this.reschedule?"":n`<button type="button" ?disabled=${this.busy}
          @click=${()=>this.act(e,"hold")}>Hold ${h(new Date(e.start))}</button>`}
        <button type="button" class="primary" ?disabled=${this.busy}
          @click=${()=>this.act(e,"book")}>${this.reschedule?"Move here":"Book"}
          ${h(new Date(e.start))}</button></li>`)}</ul>`}};customElements.define("fs-find",W);var at=900*1e3,I=class extends y{static properties={view:{type:String},days:{attribute:!1},resources:{attribute:!1},entries:{attribute:!1},dayStart:{type:Number},dayEnd:{type:Number}};static styles=m`
    :host { display: block; overflow: auto; max-height: calc(100vh - 11rem); }
    table { border-collapse: collapse; width: 100%; table-layout: fixed; font-size: 0.85rem; }
    th, td { border: 1px solid #c8ccd0; padding: 2px 3px; vertical-align: top; }
    thead th { position: sticky; top: 0; background: #eef1f4; z-index: 1; }
    th[scope="row"] { text-align: left; background: #f7f8f9; width: 11rem;
      position: sticky; left: 0; }
    td.slot { height: 1.6rem; }
    td.over { outline: 3px solid #1d4ed8; outline-offset: -3px; }
    .time { width: 4.5rem; }
    button.entry { display: block; width: 100%; text-align: left; margin: 1px 0;
      border: 1px solid #555; border-left-width: 6px; border-radius: 3px; padding: 1px 4px;
      font: inherit; cursor: pointer; background: #fff; color: #111; overflow: hidden;
      white-space: nowrap; text-overflow: ellipsis; position: relative; }
    button.entry:focus-visible { outline: 3px solid #1d4ed8; outline-offset: 1px; }
    .booked { border-left-color: #1e6b2f; background: #e7f5ea; }
    .held { border-left-color: #8a5a00; background: #fff4dc; border-style: dashed; }
    .arrived { border-left-color: #0b4f8a; background: #e3effa; }
    .noshow { border-left-color: #8b1c1c; background: #fbe7e7; }
    .blocked { border-left-color: #444; background: repeating-linear-gradient(45deg, #eee,
      #eee 6px, #ddd 6px, #ddd 12px); }
    .flagged { border-left-color: #b00020; background: #ffe4ec; }
    .offer { border-left-color: #6b21a8; background: #f3e8ff; }
    .waitlist { border-left-color: #6b21a8; }
    .kind { font-weight: 600; }
    .sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);
      white-space: nowrap; }
    .empty { color: #555; font-style: italic; }
  `;constructor(){super(),this.view="week",this.days=[],this.resources=[],this.entries=[],this.dayStart=7,this.dayEnd=19}open(t){this.dispatchEvent(new CustomEvent("fs-open",{detail:t,bubbles:!0,composed:!0}))}entryButton(t,e){let i=`, until ${h(t.end)}, ${E[t.kind]||t.kind}`;return n`<button class="entry ${t.kind}" data-key=${t.key} draggable=${e?"true":"false"} title=${`${h(t.start)} ${t.label}${i}`} @click=${()=>this.open(t)}
      @dragstart=${s=>{s.dataTransfer.setData("text/plain",t.key),s.dataTransfer.effectAllowed="move"}}
      ><span class="kind">${h(t.start)}</span> ${t.label}<span class="sr">${i}</span
      ></button>`}renderWeek(){let t=new Map;for(let e of this.entries){let i=this.days.findIndex(r=>L(r,e.start));if(i<0)continue;let s=`${e.resource}|${i}`;t.has(s)||t.set(s,[]),t.get(s).push(e)}return n`<table aria-label="Week">
      <thead><tr><th scope="col">Resource</th>${this.days.map(e=>n`<th scope="col">${F(e)}</th>`)}</tr></thead>
      <tbody>${this.resources.map(e=>n`<tr><th scope="row">${e.name}</th>
        ${this.days.map((i,s)=>n`<td>${(t.get(`${e.ref}|${s}`)||[]).map(r=>this.entryButton(r,!1))}</td>`)}</tr>`)}</tbody></table>`}renderDay(){let t=this.days[0],e=[];for(let s=this.dayStart*4;s<this.dayEnd*4;s++)e.push(new Date(t.getFullYear(),t.getMonth(),t.getDate(),0,s*15));let i=new Map;for(let s of this.entries){if(!L(s.start,t))continue;let r=Math.max(0,Math.min(e.length-1,Math.floor((s.start-e[0])/at))),a=`${s.resource}|${r}`;i.has(a)||i.set(a,[]),i.get(a).push(s)}return n`<table aria-label="Day">
      <thead><tr><th scope="col" class="time">Time</th>${this.resources.map(s=>n`<th scope="col">${s.name}</th>`)}</tr></thead>
      <tbody>${e.map((s,r)=>n`<tr><th scope="row" class="time">${h(s)}</th>
        ${this.resources.map(a=>n`<td class="slot" data-resource=${a.ref}
          data-start=${s.toISOString()}
          @dragover=${o=>{o.preventDefault(),o.currentTarget.classList.add("over")}}
          @dragleave=${o=>o.currentTarget.classList.remove("over")}
          @drop=${o=>this.dropped(o,a.ref,s)}
          >${(i.get(`${a.ref}|${r}`)||[]).map(o=>this.entryButton(o,!!o.appointment))}</td>`)}</tr>`)}</tbody></table>`}dropped(t,e,i){t.preventDefault(),t.currentTarget.classList.remove("over");let s=t.dataTransfer.getData("text/plain"),r=this.entries.find(a=>a.key===s);!r||!r.appointment||this.dispatchEvent(new CustomEvent("fs-move",{bubbles:!0,composed:!0,detail:{entry:r,resource:e,start:i}}))}render(){return this.resources.length?this.view==="day"?this.renderDay():this.renderWeek():n`<p class="empty">Choose practitioners, rooms or devices to see their
        calendars.</p>`}};customElements.define("fs-grid",I);function V(l){return Array.from({length:7},(t,e)=>v(l,e))}var B=class extends y{static properties={fhir:{attribute:!1},entries:{state:!0},offers:{state:!0},message:{state:!0}};static styles=[T,m`
    table { border-collapse: collapse; width: 100%; }
    th, td { border-bottom: 1px solid #ddd; padding: 4px; text-align: left; vertical-align: top; }
    button { font: inherit; padding: 3px 8px; cursor: pointer; }
  `];constructor(){super(),this.entries=[],this.offers=[],this.message=null}async refresh(){let t=await this.fhir.searchAll("Appointment",{status:"waitlist",_include:"Appointment:patient"},1e3),e=await this.fhir.searchAll("Appointment",{status:"pending",_include:"Appointment:patient"},1e3),i={...t.included,...e.included},s=a=>(a.participant||[]).map(o=>o.actor&&o.actor.reference).find(o=>o&&o.startsWith("Patient/"));this.offers=e.resources.filter(a=>w(a,b+"waitlist-offer").length).map(a=>({appt:a,patient:$(i[s(a)])||s(a)||""}));let r=new Set(this.offers.map(a=>{let p=(w(a.appt,b+"waitlist-offer")[0].extension||[]).find(d=>d.url==="entry");return p&&p.valueReference&&p.valueReference.reference}));this.entries=t.resources.map(a=>({appt:a,patient:$(i[s(a)])||s(a)||"",offered:r.has(`Appointment/${a.id}`)}))}connectedCallback(){super.connectedCallback(),this.fhir&&this.refresh().catch(t=>{this.message={text:t.message}})}async act(t,e){try{await e(),this.message={ok:!0,text:t},await this.refresh(),this.dispatchEvent(new CustomEvent("fs-changed",{bubbles:!0,composed:!0}))}catch(i){this.message={ok:!1,text:i.message}}}bookOffer(t){return this.act(`Booked ${t.patient}.`,()=>this.fhir.post(`Appointment/${t.appt.id}/$book`,{resourceType:"Parameters"}))}remove(t){return this.act(`${t.patient} is off the waitlist.`,()=>this.fhir.patch(`Appointment/${t.appt.id}`,[{op:"replace",path:"/status",value:"cancelled"}]))}wanted(t){return(t.requestedPeriod||[]).map(e=>`${e.start?u(new Date(e.start)):"any"} to ${e.end?u(new Date(e.end)):"any"}`).join("; ")||"any time"}render(){return n`<h2>Waitlist</h2>
      ${P(this.message)}
      <h3>Live offers</h3>
      ${this.offers.length?n`<table><thead><tr><th scope="col">Patient</th>
        <th scope="col">Offered time</th><th scope="col">Action</th></tr></thead><tbody>
        ${this.offers.map(t=>n`<tr><td>${t.patient}</td>
          <td>${u(new Date(t.appt.start))} ${h(new Date(t.appt.start))}</td>
          <td><button @click=${()=>this.bookOffer(t)}>Book offer for ${t.patient}</button>
          </td></tr>`)}</tbody></table>`:n`<p>No open offers.</p>`}
      <h3>Waiting</h3>
      ${this.entries.length?n`<table><thead><tr><th scope="col">Patient</th>
        <th scope="col">Wants</th><th scope="col">Priority</th><th scope="col">Offer</th>
        <th scope="col">Action</th></tr></thead><tbody>
        ${this.entries.map(t=>n`<tr><td>${t.patient}</td><td>${this.wanted(t.appt)}</td>
          <td>${t.appt.priority??""}</td><td>${t.offered?"Offered":"—"}</td>
          <td><button @click=${()=>this.remove(t)}>Remove ${t.patient}</button></td></tr>`)}
        </tbody></table>`:n`<p>Nobody is waiting.</p>`}`}};customElements.define("fs-waitlist",B);var rt=3e3,nt=3e4,X=[["calendar","Calendar"],["find","Find & book"],["waitlist","Waitlist"],["kpis","KPIs"]],M=class extends y{static properties={fhir:{state:!0},error:{state:!0},tab:{state:!0},view:{state:!0},anchor:{state:!0},resources:{state:!0},chosen:{state:!0},entries:{state:!0},selected:{state:!0},visitTypes:{state:!0},contextPatient:{state:!0},reschedule:{state:!0},notice:{state:!0},live:{state:!0},loading:{state:!0}};static styles=m`
    :host { display: block; }
    header { display: flex; align-items: center; gap: 1rem; flex-wrap: wrap;
      padding: 0.5rem 1rem; background: #1e3a8a; color: #fff; }
    header h1 { font-size: 1.2rem; margin: 0; }
    nav ul { display: flex; gap: 0.25rem; list-style: none; margin: 0; padding: 0;
      flex-wrap: wrap; }
    nav button { font: inherit; padding: 6px 12px; border: 1px solid #fff; border-radius: 4px;
      background: transparent; color: #fff; cursor: pointer; }
    nav button[aria-current="page"] { background: #fff; color: #1e3a8a; font-weight: 700; }
    .who { margin-left: auto; }
    main { display: grid; grid-template-columns: minmax(13rem, 16rem) 1fr minmax(16rem, 22rem);
      gap: 0.75rem; padding: 0.75rem; }
    main.single { grid-template-columns: 1fr; max-width: 60rem; }
    @media (max-width: 1100px) {
      main { grid-template-columns: 1fr; }
    }
    .toolbar { display: flex; gap: 0.4rem; align-items: center; flex-wrap: wrap;
      margin-bottom: 0.5rem; }
    .toolbar h2 { font-size: 1rem; margin: 0 0.5rem 0 0; }
    button, select, input { font: inherit; padding: 4px 8px; }
    button { cursor: pointer; }
    button[aria-pressed="true"] { background: #1e3a8a; color: #fff; }
    fieldset { border: 1px solid #c8ccd0; border-radius: 4px; margin: 0 0 0.5rem 0; }
    fieldset label { display: block; padding: 2px 0; }
    .scroll { max-height: 50vh; overflow: auto; }
    .notice { padding: 6px; background: #e3effa; color: #0b2545; border-radius: 4px; }
    .error { padding: 1rem; background: #fbe7e7; color: #5c1010; }
    section { min-width: 0; }
    form.block { display: grid; gap: 0.3rem; }
    h2 { font-size: 1.1rem; }
  `;constructor(){super(),this.view=localStorage.getItem("fs-view")||"week",this.anchor=R(new Date),this.route(),this.resources=[],this.chosen=new Set(JSON.parse(localStorage.getItem("fs-chosen")||"[]")),this.entries=[],this.selected=null,this.visitTypes=[],this.contextPatient=null,this.reschedule=null,this.notice="",this.live="",this.loading=!1,this.since=null}async connectedCallback(){super.connectedCallback(),window.addEventListener("hashchange",()=>{let t=`${this.view}|${this.anchor}`;this.route(),this.fhir&&t!==`${this.view}|${this.anchor}`&&this.reload()});try{this.fhir=await _(),await Promise.all([this.loadResources(),this.loadVisitTypes()]),await this.takeLaunchContext(),await this.reload(),this.since=new Date().toISOString(),this.live="",this.startLive(),this.schedulePoll(),await this.updateComplete,window.fsReadyAt=performance.now(),document.body.dataset.ready="true"}catch(t){this.error=t.message||String(t)}}route(){let[t,e,i]=location.hash.replace(/^#/,"").split("/");this.tab=X.some(([s])=>s===t)?t:"calendar",e&&/^\d{4}-\d{2}-\d{2}$/.test(e)&&(this.anchor=S(e)),(i==="day"||i==="week")&&(this.view=i)}disconnectedCallback(){super.disconnectedCallback(),clearTimeout(this.poller),this.feed&&this.feed.stop()}async loadResources(){let{resources:t}=await this.fhir.searchAll("Schedule",{active:"true"}),e=new Map;for(let s of t)for(let r of s.actor||[]){let a=r.reference||"";/^(Practitioner|Location|Device|PractitionerRole)\//.test(a)&&(e.has(a)||e.set(a,{ref:a,name:r.display||"",schedule:s.id}))}for(let s of["Practitioner","Location"]){let r=[...e.keys()].filter(a=>a.startsWith(`${s}/`)).map(a=>a.split("/")[1]);for(let a=0;a<r.length;a+=100){let{resources:o}=await this.fhir.searchAll(s,{_id:r.slice(a,a+100).join(",")});for(let p of o)e.get(`${s}/${p.id}`).name=$(p)}}this.resources=[...e.values()].map(s=>({...s,name:s.name||s.ref})).sort((s,r)=>s.ref.split("/")[0].localeCompare(r.ref.split("/")[0])||s.name.localeCompare(r.name));let i=new Set(this.resources.map(s=>s.ref));this.chosen=new Set([...this.chosen].filter(s=>i.has(s))),this.chosen.size||(this.chosen=new Set(this.resources.filter(s=>s.ref.startsWith("Practitioner/")).slice(0,8).map(s=>s.ref)))}async takeLaunchContext(){let{patient:t,resources:e}=this.fhir.context,i=new Map(this.resources.map(a=>[a.ref,a])),s=new Map(this.resources.map(a=>[`Schedule/${a.schedule}`,a.ref])),r=e.map(a=>i.has(a)?a:s.get(a)).filter(Boolean);if(r.length&&(this.chosen=new Set(r)),t)try{this.contextPatient={ref:t,name:$(await this.fhir.get(t))}}catch{this.contextPatient={ref:t,name:t}}}async loadVisitTypes(){let{resources:t}=await this.fhir.searchAll("HealthcareService",{},1e3),e=[];for(let i of t)for(let s of w(i,b+"visit-type")){let r=(s.extension||[]).find(o=>o.url==="code"),a=r&&r.valueCoding;a&&e.push({token:a.system?`${a.system}|${a.code}`:a.code,label:`${a.display||a.code} (${i.name||i.id})`})}this.visitTypes=e}get days(){return this.view==="day"?[this.anchor]:V(q(this.anchor))}async reload(){let t=this.days;this.loading=!0;let e=performance.now(),i=e;try{this.entries=await z(this.fhir,[...this.chosen],t[0],v(t[t.length-1],1)),i=performance.now()}finally{this.loading=!1}this.updateComplete.then(async()=>{let s=this.shadowRoot.querySelector("fs-grid");s&&await s.updateComplete,(window.fsTimings=window.fsTimings||[]).push({fetch:i-e,render:performance.now()-i,entries:this.entries.length,resources:this.chosen.size})}),this.selected&&(this.selected=this.entries.find(s=>s.key===this.selected.key)||this.selected)}startLive(){this.socketUp=!1,this.feed=new C(this.fhir,()=>{window.fsNotifications=(window.fsNotifications||0)+1,this.changedElsewhere()},t=>{this.socketUp=t==="live",document.body.dataset.live=t}),this.feed.start().catch(()=>{this.socketUp=!1})}schedulePoll(){clearTimeout(this.poller),this.poller=setTimeout(async()=>{await this.poll(),this.schedulePoll()},this.socketUp?nt:rt)}async changedElsewhere(){if(this.refreshing){this.again=!0;return}this.refreshing=!0;try{do{this.again=!1,await this.reload();let t=this.shadowRoot.querySelector("fs-waitlist");t&&await t.refresh(),this.live=`Updated ${new Date().toLocaleTimeString()}`}while(this.again)}finally{this.refreshing=!1}}async poll(){if(!this.fhir||document.hidden)return;let t=this.since;this.since=new Date(Date.now()-2e3).toISOString();try{(await Promise.all(["Appointment","Slot"].map(i=>this.fhir.get(`${i}/_history`,{_since:t,_count:1})))).some(i=>(i.entry||[]).length)&&await this.changedElsewhere()}catch{this.since=t}}go(t){location.hash=t==="calendar"?`calendar/${D(this.anchor)}/${this.view}`:t,this.tab=t}setView(t){this.view=t,localStorage.setItem("fs-view",t),this.go("calendar"),this.reload()}shift(t){this.anchor=t===0?R(new Date):v(this.anchor,t*(this.view==="day"?1:7)),this.go("calendar"),this.reload()}toggle(t,e){let i=new Set(this.chosen);e?i.add(t):i.delete(t),this.chosen=i,localStorage.setItem("fs-chosen",JSON.stringify([...i])),this.reload()}async move(t){let{entry:e,resource:i,start:s}=t.detail,r=e.appointment,a=new Date(r.end)-new Date(r.start),o=new Date(s.getTime()+a),p={resourceType:"Appointment",status:"proposed",start:f(s),end:f(o),requestedPeriod:[{start:f(s),end:f(o)}],participant:(r.participant||[]).map(d=>d.actor&&d.actor.reference===e.resource?{...d,actor:{reference:i}}:d)};for(let d of["serviceType","appointmentType","specialty","reasonCode","description","supportingInformation","basedOn","priority","comment"])r[d]!==void 0&&(p[d]=r[d]);try{await this.fhir.post("Appointment/$book",{resourceType:"Parameters",parameter:[{name:"appt-resource",resource:p},{name:"cancelled-appt-id",valueReference:{reference:`Appointment/${r.id}`}}]}),this.notice=`Moved to ${u(s)} ${s.toLocaleTimeString([],{hour:"2-digit",minute:"2-digit"})}.`}catch(d){this.notice=`Not moved: ${d.message}`}await this.reload()}async block(t){t.preventDefault();let e=t.target,i=new FormData(e),s=this.resources.find(o=>o.ref===i.get("resource")),r=i.get("day"),a={resourceType:"Slot",schedule:{reference:`Schedule/${s.schedule}`},status:"busy-unavailable",start:f(S(r,i.get("from"))),end:f(S(r,i.get("to"))),comment:i.get("why")||"Blocked"};try{await this.fhir.post("Slot",a),this.notice=`Blocked ${s.name} on ${r}.`,e.reset()}catch(o){this.notice=`Not blocked: ${o.message}`}await this.reload()}renderCalendar(){let t=this.resources.filter(s=>this.chosen.has(s.ref)),e=this.days,i=this.view==="day"?u(e[0]):`${u(e[0])} – ${u(e[6])}`;return n`<main>
      <section aria-label="Calendars to show">
        <fieldset><legend>Calendars</legend><div class="scroll">
          ${this.resources.map(s=>n`<label><input type="checkbox"
            .checked=${this.chosen.has(s.ref)}
            @change=${r=>this.toggle(s.ref,r.target.checked)}> ${s.name}
            <small>(${s.ref.split("/")[0]})</small></label>`)}
        </div></fieldset>
        <form class="block" @submit=${this.block}><fieldset><legend>Block time</legend>
          <label>Calendar <select name="resource">${this.resources.map(s=>n`<option value=${s.ref}>${s.name}</option>`)}</select></label>
          <label>Day <input type="date" name="day" required value=${D(this.anchor)}></label>
          <label>From <input type="time" name="from" required value="12:00"></label>
          <label>To <input type="time" name="to" required value="13:00"></label>
          <label>Why <input type="text" name="why"></label>
          <button type="submit">Block</button></fieldset></form>
      </section>
      <section aria-label="Calendar">
        <div class="toolbar">
          <h2>${i}</h2>
          <button aria-pressed=${this.view==="day"} @click=${()=>this.setView("day")}>Day
          </button>
          <button aria-pressed=${this.view==="week"} @click=${()=>this.setView("week")}>Week
          </button>
          <button @click=${()=>this.shift(-1)} aria-label="Previous">‹</button>
          <button @click=${()=>this.shift(0)}>Today</button>
          <button @click=${()=>this.shift(1)} aria-label="Next">›</button>
          <span role="status" class=${this.notice?"notice":""}>${this.notice}</span>
          <span class="live" aria-hidden="true">${this.loading?"Loading…":this.live}</span>
        </div>
        <fs-grid .view=${this.view} .days=${e} .resources=${t} .entries=${this.entries}
          @fs-open=${s=>{this.selected=s.detail}} @fs-move=${this.move}></fs-grid>
      </section>
      <aside aria-label="Selected entry">
        <fs-details .fhir=${this.fhir} .entry=${this.selected}
          .names=${Object.fromEntries(this.resources.map(s=>[s.ref,s.name]))}
          @fs-changed=${()=>this.reload()}
          @fs-reschedule=${s=>{this.reschedule=s.detail,this.go("find")}}>
        </fs-details>
      </aside>
    </main>`}renderTab(){return this.tab==="find"?n`<main class="single"><fs-find .fhir=${this.fhir} .visitTypes=${this.visitTypes}
        .practitioners=${this.resources.filter(t=>t.ref.startsWith("Practitioner/"))}
        .names=${Object.fromEntries(this.resources.map(t=>[t.ref,t.name]))}
        .reschedule=${this.reschedule} .patient=${this.contextPatient} @fs-changed=${()=>{this.reschedule=null,this.reload()}}></fs-find></main>`:this.tab==="waitlist"?n`<main class="single"><fs-waitlist .fhir=${this.fhir}
        @fs-changed=${()=>this.reload()}></fs-waitlist></main>`:this.tab==="kpis"?(import("./chunk-O33GQJLN.js"),n`<main class="single"><fs-kpis .fhir=${this.fhir}
        .resources=${this.resources}></fs-kpis></main>`):this.renderCalendar()}render(){if(this.error)return n`<p class="error" role="alert">${this.error}</p>`;if(!this.fhir)return n`<p aria-live="polite">Signing in…</p>`;let t=this.fhir.user;return n`<header>
        <h1>fhir-sched front desk</h1>
        <nav aria-label="Sections"><ul>${X.map(([e,i])=>n`<li><button
          aria-current=${this.tab===e?"page":"false"} @click=${()=>this.go(e)}
          >${i}</button></li>`)}</ul></nav>
        ${this.contextPatient?n`<span>Patient: <strong>${this.contextPatient.name}</strong>
          </span>`:""}
        <span class="who">${t?`Signed in as ${t}`:"Auth off"}</span>
      </header>${this.renderTab()}`}};customElements.define("fs-console",M);
